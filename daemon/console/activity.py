"""Conflicts and ambiguity storms of the last 24 hours, for the Problems page.

Fed with every event sync folds (:meth:`~daemon.sync.engine.SyncEngine.on_event`)
from the console's start on, and kept in memory within bounds: the page reads
this, never the log. A *storm* is a ticket whose changes keep arriving in the
same second as the last known one, so that sync cannot order them and reads
the ticket again (``sync.observation.ignored`` with reason ``ambiguous``):
:data:`STORM_READS` or more in the window. Each one costs a read of the
desk's API budget; a storm usually means two writers fighting over a field
(an automation rule, a second integration).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from daemon.console.explain import moment
from eventstore import RecordedEvent
from projections import kinds

WINDOW_S = 24 * 3600.0
#: Same-second changes of one ticket within the window that make a storm.
STORM_READS = 10
#: At most this many conflicts (and ambiguous observations per ticket) are remembered.
KEEP = 5000


@dataclass(frozen=True)
class Storm:
    link_id: str
    tenant: str | None
    count: int
    last_at: float
    last: RecordedEvent


def _unix(event: RecordedEvent) -> float:
    at = moment(event.recorded_at)
    return at.timestamp() if at is not None else time.time()


class Activity:
    """What the Problems page lists beyond commands: recent conflicts and storms."""

    def __init__(self) -> None:
        self._conflicts: deque[tuple[float, RecordedEvent]] = deque(maxlen=KEEP)
        self._ambiguous: dict[str, deque[tuple[float, RecordedEvent]]] = {}

    def observe(self, event: RecordedEvent) -> None:
        if event.type == kinds.CONFLICT_RESOLVED:
            self._conflicts.append((_unix(event), event))
        elif event.type == kinds.OBSERVATION_IGNORED and event.data.get("reason") == "ambiguous":
            link_id = event.data.get("link_id") or event.ticket
            if isinstance(link_id, str):
                seen = self._ambiguous.setdefault(link_id, deque(maxlen=KEEP))
                seen.append((_unix(event), event))

    def conflicts(self, now: float | None = None) -> list[RecordedEvent]:
        since = (now or time.time()) - WINDOW_S
        while self._conflicts and self._conflicts[0][0] < since:
            self._conflicts.popleft()
        return [event for _, event in self._conflicts]

    def storms(self, now: float | None = None) -> list[Storm]:
        since = (now or time.time()) - WINDOW_S
        out: list[Storm] = []
        for link_id in list(self._ambiguous):
            seen = self._ambiguous[link_id]
            while seen and seen[0][0] < since:
                seen.popleft()
            if not seen:
                del self._ambiguous[link_id]
            elif len(seen) >= STORM_READS:
                at, last = seen[-1]
                out.append(Storm(link_id, last.tenant, len(seen), at, last))
        return out
