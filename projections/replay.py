"""Replay: the bridge state as of any point in the log, and what other rules would have decided.

:func:`replay` folds the log from position 1 up to a position and summarises
the state it gives; :func:`write_projection` writes such a rebuilt state as the
projection rows (see "Writing" below). :func:`preview` walks the same log with
a caller-supplied ``decide`` function (sync's pure ``decide`` with other
rules, in practice) and folds *its own* decisions instead of the recorded
ones, so a decision that comes out differently is carried forward: later
inputs are decided on the state the other rules would have left. The inputs
themselves (what arrived from either side) and the outcomes of commands are
the recorded ones. Each differing decision is marked as changed by the rules
themselves, or downstream of an earlier change (the rules alone, on the
recorded state, would have decided it as recorded). Nothing here reads a
clock, so the same log always gives the same, byte-identical output.

Writing: the daemon keeps the projection rows saved up to its own checkpoint
and, while it runs, saves only the rows that changed since its last save. So
a rebuilt projection is written exactly *at that checkpoint*: rows folded from
position 1 to the checkpoint position, which (the fold being deterministic)
are byte for byte the rows a sound daemon believes the table holds. The
checkpoint is re-read inside the one write transaction that replaces the
rows; if the daemon saved a newer one meanwhile, nothing is written and the
caller folds on to it and tries again. Events past the checkpoint are folded
by the daemon at its next start, as always.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from eventstore import RecordedEvent
from eventstore.progress import PROGRESS_EVERY, OnProgress
from projections import kinds
from projections.fold import apply
from projections.persist import NAME, _ensure_schema, save_checkpoint, write_transaction
from projections.state import (
    META_KEYS,
    BridgeState,
    Json,
    decode_command,
    decode_link,
    decode_meta,
    encode_command,
    encode_link,
    encode_meta,
)

#: The events sync decides on (the engine's inputs).
INPUTS = kinds.OBSERVATIONS | {kinds.COMMAND_DELIVERED}


class Proposed(Protocol):
    """What a decide function returns per decision: an event to be appended."""

    @property
    def type(self) -> str: ...

    @property
    def ticket(self) -> str | None: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def event_id(self) -> str: ...

    @property
    def stream(self) -> str: ...

    @property
    def tenant(self) -> str | None: ...

    @property
    def causation_id(self) -> str | None: ...

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def source(self) -> str: ...

    @property
    def occurred_at(self) -> str | None: ...


Decide = Callable[[BridgeState, RecordedEvent], Sequence[Proposed]]


def canonical(type_: str, ticket: str | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """A decision reduced to what it says (its id and position aside), for comparing.

    An update's ``accept`` lists say which values the target may hold: earlier versions
    repeated a value once per write in flight, which says nothing more, so each value
    counts once.
    """
    plain = orjson.loads(orjson.dumps(data))
    params = plain.get("params")
    accept = params.get("accept") if isinstance(params, dict) else None
    if isinstance(accept, dict):
        for name, values in accept.items():
            if isinstance(values, list) and all(isinstance(v, str) for v in values):
                accept[name] = list(dict.fromkeys(values))
    return {"type": type_, "ticket": ticket, "data": plain}


def state_digest(state: BridgeState) -> str:
    """A short hash of the whole folded state: equal digests, equal states.

    It hashes the bytes of ``state.to_json()`` dumped with sorted keys, fed record by
    record: the whole state as one JSON tree would be a second copy of it in memory.
    """
    digest = hashlib.sha256()
    parts = state.to_json_parts()
    digest.update(b"{")
    for n, key in enumerate(sorted(parts)):
        digest.update(b"," if n else b"")
        digest.update(_sorted_dump(key) + b":")
        value = parts[key]
        if key == "links":
            _digest_map(digest, state.links, encode_link)
        elif key == "outbox":
            _digest_map(digest, state.outbox, encode_command)
        else:
            digest.update(_sorted_dump(value))
    digest.update(b"}")
    return digest.hexdigest()[:16]


def _sorted_dump(value: Json) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _digest_map(digest: Any, records: Mapping[str, Any], encode: Callable[[Any], Json]) -> None:
    """``{"key":record,...}`` as orjson writes it with sorted keys, one record at a time."""
    digest.update(b"{")
    for n, key in enumerate(sorted(records)):
        digest.update(b"," if n else b"")
        digest.update(_sorted_dump(key) + b":" + _sorted_dump(encode(records[key])))
    digest.update(b"}")


def copy_state(state: BridgeState) -> BridgeState:
    """A deep copy of ``state``, record by record through its JSON form: a record's JSON is
    dropped as soon as it is decoded, so the copy never holds a whole second tree."""
    loads, dumps = orjson.loads, orjson.dumps
    copy = BridgeState(position=state.position)
    copy.links = {k: decode_link(loads(dumps(encode_link(v)))) for k, v in state.links.items()}
    copy.outbox = {
        k: decode_command(loads(dumps(encode_command(v)))) for k, v in state.outbox.items()
    }
    for key in META_KEYS:
        decode_meta(copy, key, loads(dumps(encode_meta(state, key))))
    copy.derive_indexes()
    return copy


@dataclass
class ReplaySummary:
    """What a replay folded and the state it arrived at."""

    position: int = 0
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    state: BridgeState = field(default_factory=BridgeState)
    #: A copy of the state as it was at ``snapshot_at`` (when one was asked for).
    snapshot: BridgeState | None = None

    def to_dict(self) -> dict[str, Any]:
        links: dict[str, int] = {}
        for link in self.state.links.values():
            links[link.state] = links.get(link.state, 0) + 1
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
    on_progress: OnProgress | None = None,
    into: ReplaySummary | None = None,
    snapshot_at: int | None = None,
) -> ReplaySummary:
    """Fold ``events`` (from position 1) up to ``until`` inclusive.

    ``into`` continues a summary folded so far: the log can be replayed batch by
    batch, never holding more than one batch of events. With ``snapshot_at``,
    :attr:`ReplaySummary.snapshot` becomes a copy of the state as of that
    position (see :func:`snapshot` for a log that ends before it). ``on_progress`` is
    told the position folded to every :data:`~eventstore.progress.PROGRESS_EVERY` events.
    """
    summary = into if into is not None else ReplaySummary()
    if snapshot_at is not None and snapshot_at <= 0 and summary.snapshot is None:
        summary.snapshot = BridgeState()
    for event in events:
        if until is not None and event.position > until:
            break
        apply(summary.state, event)
        summary.events += 1
        summary.position = event.position
        summary.by_type[event.type] = summary.by_type.get(event.type, 0) + 1
        if event.position == snapshot_at:
            summary.snapshot = copy_state(summary.state)
        if on_progress is not None and summary.events % PROGRESS_EVERY == 0:
            on_progress(event.position, None)
    if on_progress is not None:
        on_progress(summary.position, None)
    return summary


def snapshot(summary: ReplaySummary) -> BridgeState:
    """The snapshot a replay took, or its final state when the log ended before the position."""
    return summary.snapshot if summary.snapshot is not None else copy_state(summary.state)


# --------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Written:
    """What :func:`write_projection` wrote: every row, at one checkpoint."""

    position: int
    links: int
    outbox: int
    meta: int
    #: Rows that held something else before (or were not there, or should not have been).
    replaced: int


@dataclass(frozen=True)
class Moved:
    """Nothing written: the rows must be folded to ``position`` first (the checkpoint moved)."""

    position: int


def _dump(value: Json) -> str:
    # Exactly as persist.ProjectionStore serialises a row, so a running daemon's
    # record of what it saved matches the rows written here byte for byte.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def projection_rows(state: BridgeState) -> dict[str, dict[str, tuple[str, ...]]]:
    """The rows a state is saved as, per table, keyed by their primary key."""
    return {
        "projection_links": {
            link_id: (link_id, link.tenant, link.state, _dump(encode_link(link)))
            for link_id, link in sorted(state.links.items())
        },
        "projection_outbox": {
            command_id: (command_id, command.link_id, _dump(encode_command(command)))
            for command_id, command in sorted(state.outbox.items())
        },
        "projection_meta": {key: (key, _dump(encode_meta(state, key))) for key in META_KEYS},
    }


def _checkpoint(conn: sqlite3.Connection) -> int:
    """Where the saved rows stand: the checkpoint, never past the end of the log."""
    row = conn.execute(
        "SELECT position FROM projection_checkpoints WHERE name = ?", (NAME,)
    ).fetchone()
    end = conn.execute("SELECT MAX(position) FROM events").fetchone()[0] or 0
    return min(int(row[0]) if row else 0, int(end))


def saved_checkpoint(conn: sqlite3.Connection) -> int:
    """The projection checkpoint (0 when there is none yet), for reading before a rebuild."""
    try:
        return _checkpoint(conn)
    except sqlite3.OperationalError:
        return 0  # no projection table yet: nothing was ever saved


def write_projection(conn: sqlite3.Connection, state: BridgeState) -> Written | Moved:
    """Replace every projection row with ``state``'s, in one write transaction.

    ``state`` must be folded up to the saved checkpoint, re-read here under
    the write lock; when it is not (the daemon saved meanwhile), nothing is
    written and :class:`Moved` says where to fold to. Rows that should not be
    there are deleted; the checkpoint is written again, unchanged.
    """
    _ensure_schema(conn)
    with write_transaction(conn):
        position = _checkpoint(conn)
        if position != state.position:
            return Moved(position)  # nothing was written: the transaction commits empty
        replaced = 0
        rows = projection_rows(state)
        for table, wanted in rows.items():
            key = "link_id" if table == "projection_links" else (
                "command_id" if table == "projection_outbox" else "key"
            )  # fmt: skip
            held = {r[0]: tuple(r) for r in conn.execute(f"SELECT * FROM {table}")}
            gone = [k for k in held if k not in wanted]
            changed = [row for k, row in wanted.items() if held.get(k) != row]
            replaced += len(gone) + len(changed)
            conn.executemany(f"DELETE FROM {table} WHERE {key} = ?", [(k,) for k in gone])
            marks = ", ".join("?" * len(next(iter(wanted.values()), ())))
            if changed:
                conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", changed)
        save_checkpoint(conn, position)
    return Written(
        position,
        len(rows["projection_links"]),
        len(rows["projection_outbox"]),
        len(rows["projection_meta"]),
        replaced,
    )


# --------------------------------------------------------------------- preview


@dataclass
class DecisionDiff:
    """One input whose decisions differ: what the log holds and what was proposed.

    ``downstream`` when the other rules alone, on the recorded state, decide it as
    recorded: it differs only because an earlier different decision was carried on.
    """

    cause_position: int
    cause_type: str
    ticket: str | None
    recorded: list[dict[str, Any]]
    proposed: list[dict[str, Any]]
    downstream: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause_position": self.cause_position,
            "cause_type": self.cause_type,
            "ticket": self.ticket,
            "downstream": self.downstream,
            "recorded": self.recorded,
            "proposed": self.proposed,
        }


@dataclass
class Preview:
    """The decisions compared, input by input."""

    inputs: int = 0
    same: int = 0
    diffs: list[DecisionDiff] = field(default_factory=list)
    #: Commands still pending at the end of the other history (no recorded outcome settled them).
    pending: int = 0
    #: Inputs at the end of the log with no decisions recorded yet (a live log: sync has
    #: not decided them): left out of the comparison, not counted in ``inputs``.
    undecided: int = 0

    @property
    def direct(self) -> int:
        return sum(not d.downstream for d in self.diffs)

    @property
    def downstream(self) -> int:
        return sum(d.downstream for d in self.diffs)


class _Walk:
    """Plays the sync engine's order against the recorded log.

    As in the engine, an input is decided once it is folded and every decision
    of the inputs before it has come round in the log and been folded too, and
    an input with recorded decisions once everything before the first of them
    is folded (the engine appends decisions only where the log ended when it
    decided), so each input is judged on exactly the state the engine judged
    it on.
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
        while (next_ := self._next(event)) is not None:
            cause, recorded = next_
            found = self.decide(self.state, cause)
            self.proposed[cause.event_id] = [canonical(d.type, d.ticket, d.data) for d in found]
            self.pending.update(r.event_id for r in recorded if r.position > event.position)

    def _next(self, event: RecordedEvent) -> tuple[RecordedEvent, list[RecordedEvent]] | None:
        """The next input to decide now that ``event`` is folded, with its recorded
        decisions; ``None`` while the engine still waited (for its own decisions to come
        round, or for the log before the input's first decision to be folded)."""
        if not self.deferred or self.pending:
            return None
        cause = self.deferred[0]
        recorded = self.decisions.get(cause.event_id, [])
        if recorded and recorded[0].position - 1 > event.position:
            return None
        self.deferred.popleft()
        return cause, recorded


def _recorded(proposed: Proposed, position: int, like: RecordedEvent) -> RecordedEvent:
    """A proposed decision as if appended at ``position`` (for folding it)."""
    return RecordedEvent(
        position=position,
        event_id=proposed.event_id,
        stream=proposed.stream,
        stream_version=0,
        type=proposed.type,
        schema_version=1,
        tenant=proposed.tenant,
        ticket=proposed.ticket,
        causation_id=proposed.causation_id,
        correlation_id=proposed.correlation_id,
        source=proposed.source,
        occurred_at=proposed.occurred_at,
        recorded_at=like.recorded_at,
        data=dict(proposed.data),
        hash="",
    )


class _Carried(_Walk):
    """The other history: recorded inputs and outcomes, its own decisions folded.

    Its decisions are folded where the engine's recorded decisions for the same
    cause came round in the log (so the interleaving with other events is the
    engine's), or at once when the log holds none. A recorded outcome settles the
    command with the same id when the other history issued one, whatever it now
    says; an outcome of a command it never issued is left out.
    """

    def __init__(self, decide: Decide, decisions: Mapping[str, list[RecordedEvent]]) -> None:
        super().__init__(decide, decisions)
        self.placing: dict[str, list[Proposed]] = {}

    def step(self, event: RecordedEvent) -> None:
        if event.source == kinds.SYNC_SOURCE and event.causation_id is not None:
            own = self.placing.pop(event.causation_id, None)
            if own is not None:
                for n, proposed in enumerate(own):
                    apply(self.state, _recorded(proposed, event.position + n, event))
        elif event.type in kinds.OUTCOMES:
            command = self.state.outbox.get(event.data.get("command_id", ""))
            if command is None:
                event = event._replace(type="")  # never issued here: nothing to settle
            else:
                event = event._replace(data={**event.data, "kind": command.kind})
            apply(self.state, event)
        else:
            apply(self.state, event)
        self.state.position = event.position
        self.pending.discard(event.event_id)
        if event.type in INPUTS:
            self.deferred.append(event)
        while (next_ := self._next(event)) is not None:
            cause, recorded = next_
            found = list(self.decide(self.state, cause))
            self.proposed[cause.event_id] = [canonical(d.type, d.ticket, d.data) for d in found]
            later = [r for r in recorded if r.position > event.position]
            if later:
                self.placing[cause.event_id] = found
                self.pending.update(r.event_id for r in later)
            else:
                for proposed in found:
                    apply(self.state, _recorded(proposed, event.position, event))
                self.state.position = event.position


def preview(
    events: Sequence[RecordedEvent], decide: Decide, decided_through: int | None = None
) -> Preview:
    """Every input's recorded decisions next to what ``decide`` proposes for it, carried on.

    ``decided_through`` is set for a log that may still be growing (the daemon's saved
    checkpoint: every input up to it was decided). An input past it and past the last
    input with recorded decisions, with none of its own, may simply not be decided yet:
    it is left out (counted in ``undecided``) rather than reported as changed.
    """
    decisions: dict[str, list[RecordedEvent]] = {}
    for event in events:
        if event.source == kinds.SYNC_SOURCE and event.causation_id is not None:
            decisions.setdefault(event.causation_id, []).append(event)
    judged = _Walk(decide, decisions)  # the other rules on the recorded state
    carried = _Carried(decide, decisions)  # the other rules on their own state
    for event in events:
        judged.step(event)
        carried.step(event)
    result = Preview(pending=len(carried.state.outbox))
    # Sync decides inputs in log order: one with no decisions before the last input that
    # has some was decided (into nothing); one after it may not be decided yet.
    last_decided = len(events) and events[-1].position
    if decided_through is not None:
        by_id = {e.event_id: e.position for e in events}
        last_decided = max([decided_through, *(by_id.get(c, 0) for c in decisions)])
    for event in events:
        if event.type not in INPUTS:
            continue
        if event.position > last_decided and event.event_id not in decisions:
            result.undecided += 1
            continue
        recorded = [canonical(d.type, d.ticket, d.data) for d in decisions.get(event.event_id, [])]
        proposed = carried.proposed.get(event.event_id, [])
        result.inputs += 1
        if recorded == proposed:
            result.same += 1
        else:
            downstream = judged.proposed.get(event.event_id, []) == recorded
            result.diffs.append(
                DecisionDiff(
                    event.position, event.type, event.ticket, recorded, proposed, downstream
                )
            )
    return result
