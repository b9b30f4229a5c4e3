"""Replay: the bridge state as of any point in the log, and what other rules would have decided.

:func:`replay` folds the log from position 1 up to a position and summarises
the state it gives. :func:`preview` walks the same log and, at every input
the sync engine decided on, asks a caller-supplied ``decide`` function (sync's
pure ``decide`` with other rules, in practice) what it would decide on the
state as it stood then, and compares that with the decisions the log records.
Each decision point is judged on the recorded history: a different outcome is
not carried forward into later states. Nothing here reads a clock or writes
anywhere, so the same log always gives the same, byte-identical output.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from eventstore import RecordedEvent
from projections import kinds
from projections.fold import apply
from projections.state import BridgeState

#: The events sync decides on (the engine's inputs).
INPUTS = kinds.OBSERVATIONS | {kinds.COMMAND_DELIVERED}


class Proposed(Protocol):
    """What a decide function returns per decision: an event to be (type, ticket, data)."""

    @property
    def type(self) -> str: ...

    @property
    def ticket(self) -> str | None: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


Decide = Callable[[BridgeState, RecordedEvent], Sequence[Proposed]]


def canonical(type_: str, ticket: str | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """A decision reduced to what it says (its id and position aside), for comparing."""
    return {"type": type_, "ticket": ticket, "data": orjson.loads(orjson.dumps(data))}


def state_digest(state: BridgeState) -> str:
    """A short hash of the whole folded state: equal digests, equal states."""
    body = orjson.dumps(state.to_json(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


@dataclass
class ReplaySummary:
    """What a replay folded and the state it arrived at."""

    position: int = 0
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    state: BridgeState = field(default_factory=BridgeState)

    def to_dict(self) -> dict[str, Any]:
        links: dict[str, int] = {}
        for link in self.state.links.values():
            links[link["state"]] = links.get(link["state"], 0) + 1
        return {
            "position": self.position,
            "events": self.events,
            "events_by_type": dict(sorted(self.by_type.items())),
            "links": dict(sorted(links.items())),
            "outbox_pending": len(self.state.outbox),
            "abandoned": len(self.state.abandoned),
            "conflicts": self.state.conflicts,
            "removed": self.state.removed,
            "state_digest": state_digest(self.state),
        }


def replay(
    events: Iterable[RecordedEvent],
    *,
    until: int | None = None,
    progress: Callable[[int], None] | None = None,
    into: ReplaySummary | None = None,
) -> ReplaySummary:
    """Fold ``events`` (from position 1) up to ``until`` inclusive.

    ``into`` continues a summary folded so far: the log can be replayed batch by
    batch, never holding more than one batch of events.
    """
    summary = into if into is not None else ReplaySummary()
    for event in events:
        if until is not None and event.position > until:
            break
        apply(summary.state, event)
        summary.events += 1
        summary.position = event.position
        summary.by_type[event.type] = summary.by_type.get(event.type, 0) + 1
        if progress is not None:
            progress(event.position)
    return summary


@dataclass
class DecisionDiff:
    """One input whose decisions differ: what the log holds and what was proposed."""

    cause_position: int
    cause_type: str
    ticket: str | None
    recorded: list[dict[str, Any]]
    proposed: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause_position": self.cause_position,
            "cause_type": self.cause_type,
            "ticket": self.ticket,
            "recorded": self.recorded,
            "proposed": self.proposed,
        }


@dataclass
class Preview:
    """The decisions compared, input by input."""

    inputs: int = 0
    same: int = 0
    diffs: list[DecisionDiff] = field(default_factory=list)


class _Walk:
    """Plays the sync engine's order against the recorded log.

    As in the engine, an input is decided once it is folded and every decision
    of the inputs before it has come round in the log and been folded too, so
    each input is judged on exactly the state the engine judged it on.
    """

    def __init__(self, decide: Decide, decisions: Mapping[str, list[RecordedEvent]]) -> None:
        self.decide = decide
        self.decisions = decisions
        self.state = BridgeState()
        self.deferred: deque[RecordedEvent] = deque()
        self.pending: set[str] = set()
        self.proposed: dict[str, list[dict[str, Any]]] = {}

    def step(self, event: RecordedEvent) -> None:
        apply(self.state, event)
        self.pending.discard(event.event_id)
        if event.type in INPUTS:
            self.deferred.append(event)
        while self.deferred and not self.pending:
            cause = self.deferred.popleft()
            found = self.decide(self.state, cause)
            self.proposed[cause.event_id] = [canonical(d.type, d.ticket, d.data) for d in found]
            recorded = self.decisions.get(cause.event_id, [])
            self.pending.update(r.event_id for r in recorded if r.position > event.position)


def preview(events: Sequence[RecordedEvent], decide: Decide) -> Preview:
    """Every input's recorded decisions next to what ``decide`` proposes for it."""
    decisions: dict[str, list[RecordedEvent]] = {}
    for event in events:
        if event.source == kinds.SYNC_SOURCE and event.causation_id is not None:
            decisions.setdefault(event.causation_id, []).append(event)
    walk = _Walk(decide, decisions)
    for event in events:
        walk.step(event)
    result = Preview()
    for event in events:
        if event.type not in INPUTS:
            continue
        recorded = [canonical(d.type, d.ticket, d.data) for d in decisions.get(event.event_id, [])]
        proposed = walk.proposed.get(event.event_id, [])
        result.inputs += 1
        if recorded == proposed:
            result.same += 1
        else:
            result.diffs.append(
                DecisionDiff(event.position, event.type, event.ticket, recorded, proposed)
            )
    return result
