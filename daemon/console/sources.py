"""What the console reads and asks of the running daemon, as one typed object.

The daemon's wiring (:mod:`daemon.service.app`) builds a :class:`Bridge` from its
components; the console never imports the wiring, so it can be started against
any daemon that provides these. Every page reads the projections kept in memory
(the engine's :class:`~projections.state.BridgeState`) and a few counters, never
a scan of the log; a ticket's timeline reads its own streams (indexed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from daemon.console.activity import Activity
from daemon.service.config import Config
from eventstore import EventStore
from projections.state import BridgeState, Side


@dataclass(frozen=True)
class DeskHealth:
    """One desk as the daemon last found it."""

    side: Side
    #: "ConnectWise" or "SOC desk".
    label: str
    reachable: bool
    #: Why not (``"unavailable (HTTP 503)"``), while unreachable.
    down_reason: str | None
    #: Since when it is in its current state (down, or answering).
    since: datetime
    #: Unix times: the last callback or webhook accepted, the last reconciliation pass.
    last_inbound_at: float | None
    last_poll_at: float | None
    #: The API rate cap the daemon keeps to (requests per second).
    rate_per_second: float
    #: HTTP attempts this process made to it.
    requests: int
    #: Whether a request could go out now without waiting for the rate cap.
    has_room: bool


@dataclass(frozen=True)
class Bridge:
    """The running daemon, as the console sees it."""

    store: EventStore
    state: Callable[[], BridgeState]
    config: Callable[[], Config]
    desks: Callable[[], list[DeskHealth]]
    #: Per desk, seconds the oldest command that should be going out has waited.
    oldest_waiting: Callable[[], dict[Side, float]]
    tenant_enabled: Callable[[str], bool]
    #: Read a ticket of a desk again (its poller does, soon).
    reread: Callable[[Side, int, str | None], None]
    #: Events of the log sync has not decided yet.
    lag: Callable[[], Awaitable[int]]
    #: Conflicts and ambiguity storms of the last 24 h (fed by the engine).
    activity: Activity
