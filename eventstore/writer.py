"""The writer's side of an append: validate in the caller's task, then write a group at once.

:func:`prepare` runs in the appending task, so a malformed event fails at its
call site and never reaches the writer. On the writer thread, a group is
written one of two ways. :func:`write_group_at_tip` decides it from what the
writer already knows (where the log ends, each recent stream's version) and
inserts it with one autocommit statement, the commit and its fsync included,
so the GIL is released once per group; the unique constraints on position,
event id and stream version refuse the statement, with nothing written, when
that knowledge is stale or an event is a repeat. Every other group goes to
:func:`write_group`, inside one transaction: it looks up every event id and
every stream version the whole group needs in two queries, decides each
request in Python (idempotent repeat, version conflict, or new events with
positions, versions and chained hashes), and inserts all new rows with one
``executemany``. A request that is refused writes nothing and does not
disturb its neighbours, because nothing is written until every request has
been decided.
"""

from __future__ import annotations

import gc
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson

from eventstore.chain import GENESIS_HASH, encode_data, event_hash
from eventstore.errors import (
    ConcurrencyError,
    DuplicateEventError,
    InvalidEventError,
    LogMovedError,
    StoreError,
)
from eventstore.events import NewEvent, RecordedEvent, utc_now

COLUMNS = (
    "position, event_id, stream, stream_version, type, schema_version, tenant, ticket, "
    "causation_id, correlation_id, source, occurred_at, recorded_at, data, hash"
)
INSERT = f"INSERT INTO events ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
#: One row as one JSON array in ``COLUMNS`` order, assembled by SQLite: the
#: thirteen leading columns through ``json_array``, whose closing bracket is
#: replaced by the ``data`` text (stored as canonical JSON already, so it is
#: spliced in as is, never re-parsed) and the quoted hash. Reading one BLOB
#: per row and decoding it with one ``orjson.loads`` replaces fifteen column
#: conversions in the sqlite3 module plus a separate decode of ``data``: a
#: modest gain per row, because decoding ``data`` itself is most of the cost.
#: ``recorded_at`` is the last element, never an array, so ``rtrim`` removes
#: exactly the closing bracket.
_PACKED_TEXT = (
    "rtrim(json_array(position, event_id, stream, stream_version, type, schema_version, "
    "tenant, ticket, causation_id, correlation_id, source, occurred_at, recorded_at), ']') "
    "|| ',' || data || ',' || json_quote(hash) || ']'"
)
PACKED = f"CAST({_PACKED_TEXT} AS BLOB)"
#: A whole batch (positions ``?`` to ``?``, at most ``?`` events) as one JSON
#: array of packed rows, with its event count and last position. SQLite
#: builds it inside a single step, so the reader thread holds the GIL only to
#: make one bytes object, and the batch decodes with one ``orjson.loads`` in
#: the caller's thread while the reader already fetches the next batch: the
#: SQL of one batch overlaps the decoding of the previous one. Rows reach the
#: aggregate in the subquery's position order; :func:`packed_batch_to_events`
#: checks that order anyway.
PACKED_BATCH = (
    "SELECT CAST('[' || group_concat(p, ',') || ']' AS BLOB), COUNT(*), MAX(position) FROM "
    f"(SELECT position, {_PACKED_TEXT} AS p FROM events "
    "WHERE position >= ? AND position <= ? ORDER BY position LIMIT ?)"
)
#: The canonical textual form of a UUID, lower-case, as ``str(uuid.UUID(...))`` gives it.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: SQLite's default limit on host parameters is 32766; stay well below it.
_CHUNK = 900


def row_to_event(
    r: tuple[Any, ...],
    _new: Any = tuple.__new__,
    _cls: type[RecordedEvent] = RecordedEvent,
    _loads: Any = orjson.loads,
) -> RecordedEvent:
    """Decode one ``SELECT {COLUMNS}`` row (replay's hot path: locals bound as defaults)."""
    return _new(  # type: ignore[no-any-return]
        _cls,
        (
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            _loads(r[13]),
            r[14],
        ),
    )


def packed_to_events(
    rows: Iterable[tuple[bytes]],
    _new: Any = tuple.__new__,
    _cls: type[RecordedEvent] = RecordedEvent,
    _loads: Any = orjson.loads,
) -> list[RecordedEvent]:
    """Decode ``SELECT {PACKED}`` rows (replay's hot path: one decode and one tuple per row).

    A row whose parts do not make fifteen fields (a ``data`` column edited
    into something that is not one JSON value) is refused rather than
    misread; ``verify`` names such a row.
    """
    events: list[RecordedEvent] = [_new(_cls, _loads(raw)) for (raw,) in rows]
    for event in events:
        if len(event) != 15:
            raise StoreError(
                f"event at position {event[0]} does not decode to one event "
                "(its data column is not a single JSON value); run verify"
            )
    return events


def packed_batch_to_events(
    blob: bytes | None,
    count: int,
    _new: Any = tuple.__new__,
    _cls: type[RecordedEvent] = RecordedEvent,
    _loads: Any = orjson.loads,
) -> list[RecordedEvent] | None:
    """Decode one ``PACKED_BATCH`` result; None when a row in it needs the per-row path.

    A row that is not one well-formed event (a ``data`` column edited into
    invalid JSON or into several values) makes the whole array unusable or
    the wrong shape; the caller then reads the batch row by row, where
    :func:`packed_to_events` names the position.
    """
    if not count:
        return []
    with gc_paused():
        try:
            rows = _loads(blob)
        except orjson.JSONDecodeError:
            return None
        if len(rows) != count:
            return None
        events: list[RecordedEvent] = [_new(_cls, row) for row in rows]
    previous = 0
    for event in events:
        if len(event) != 15:
            return None
        if event[0] <= previous:
            return sorted(events, key=_position)
        previous = event[0]
    return events


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while one batch of events is decoded.

    A batch of 2000 events is about 60,000 new dicts, lists and tuples. With
    the collector on, they trigger a young-generation pass every 700
    allocations, and each pass moves the batch still being built up a
    generation; older passes then walk it again, and a full pass walks every
    object the process holds. Decoded JSON cannot form a reference cycle, so
    those passes find nothing to free, and pausing the collector saves their
    whole cost. It is switched back on at once (only if it was on), so the
    process collects as usual between batches.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _position(event: RecordedEvent) -> int:
    return event[0]


def recorded_stamp() -> str:
    """``recorded_at`` for an event appended now: UTC, microseconds, ``Z``."""
    return utc_now().isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Prepared:
    """An event validated and encoded in the caller's task."""

    event: NewEvent
    data_text: str


def identity(p: Prepared) -> tuple[Any, ...]:
    """What makes a repeat of ``p`` the same event (every field the caller sets)."""
    e = p.event
    return (
        e.stream,
        e.type,
        e.schema_version,
        e.tenant,
        e.ticket,
        e.causation_id,
        e.correlation_id,
        e.source,
        e.occurred_at,
        p.data_text,
    )


def prepare(events: Sequence[NewEvent], expected_version: int | None) -> list[Prepared]:
    """Validate and encode ``events``; raise :class:`InvalidEventError` on the first bad one.

    Every append runs this on the event loop, so the common case (exact ``str``
    fields, a ``dict`` of data) is tested first and cheaply; anything else goes
    through the checks that name what is wrong.
    """
    prepared: list[Prepared] = []
    seen: set[str] = set()
    for event in events:
        if not isinstance(event, NewEvent):
            raise InvalidEventError(f"append takes NewEvent objects, not {type(event).__name__}")
        stream, type_, source = event.stream, event.type, event.source
        if not (
            type(stream) is str
            and type(type_) is str
            and type(source) is str
            and stream
            and type_
            and source
        ):
            _check_text(event, "stream", stream)
            _check_text(event, "type", type_)
            _check_text(event, "source", source)
        if type(event.schema_version) is not int:
            if not isinstance(event.schema_version, int) or isinstance(event.schema_version, bool):
                raise InvalidEventError(f"event {event.event_id}: schema_version must be an int")
        for value in (
            event.tenant,
            event.ticket,
            event.causation_id,
            event.correlation_id,
            event.occurred_at,
        ):
            if value is not None and not isinstance(value, str):
                _check_optional_text(event)
        event_id = event.event_id
        if not isinstance(event_id, str) or not _UUID.fullmatch(event_id):
            raise InvalidEventError(f"event id {event_id!r} is not a UUID")
        if event_id in seen:
            raise InvalidEventError(f"event id {event_id} appears twice in one append")
        seen.add(event_id)
        data = event.data
        try:
            # orjson encodes only a dict at the top; copy any other mapping into one.
            data_text = encode_data(data if type(data) is dict else dict(data))
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            raise InvalidEventError(
                f"event {event_id} ({event.type}): data is not JSON-serialisable: {exc}"
            ) from None
        prepared.append(Prepared(event, data_text))
    if expected_version is not None:
        if isinstance(expected_version, bool) or expected_version < 0:
            raise InvalidEventError("expected_version must be 0 (new stream) or more")
        streams = {p.event.stream for p in prepared}
        if len(streams) > 1:
            raise InvalidEventError(
                "expected_version applies to one stream; this append spans "
                f"{len(streams)}: {sorted(streams)}"
            )
    return prepared


def _check_text(event: NewEvent, name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"event {event.event_id}: {name} must be a non-empty string")


def _check_optional_text(event: NewEvent) -> None:
    for name in ("tenant", "ticket", "causation_id", "correlation_id", "occurred_at"):
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            raise InvalidEventError(f"event {event.event_id}: {name} must be a string or None")


def _row_identity(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (row[2], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11], row[13])


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The last position and hash (0 and the genesis hash for an empty log)."""
    row = conn.execute(
        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
    ).fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def new_row(
    p: Prepared, position: int, version: int, recorded_at: str, prev_hash: str
) -> tuple[Any, ...]:
    """The row (``COLUMNS`` order) of ``p`` recorded at ``position``, chained to ``prev_hash``."""
    e = p.event
    fields = (
        position,
        e.event_id,
        e.stream,
        version,
        e.type,
        e.schema_version,
        e.tenant,
        e.ticket,
        e.causation_id,
        e.correlation_id,
        e.source,
        e.occurred_at,
        recorded_at,
        p.data_text,
    )
    return (*fields, event_hash(prev_hash, fields))


@dataclass(slots=True)
class Tip:
    """Where the log ends, and the last version of streams written lately, as this
    connection last wrote or read them inside a transaction.

    It lets a group be decided and written without reading anything first. It
    may be stale (another process appended since), but never silently: a stale
    tip puts the group's first row at a position that is already taken, and
    the insert fails on the primary key with nothing written.
    """

    position: int
    hash: str
    versions: dict[str, int]


#: Streams whose version a :class:`Tip` keeps at most; it starts afresh beyond that.
TIP_STREAMS = 4096
#: Rows one single-statement group write takes at most (15 parameters each, far
#: below SQLite's limit of 32766); larger groups are written in a transaction.
FAST_ROWS = 64
_ROW_MARKS = "(" + ",".join("?" * 15) + ")"
_INSERTS: dict[int, str] = {}


def _insert_rows(n: int) -> str:
    sql = _INSERTS.get(n)
    if sql is None:
        sql = _INSERTS[n] = f"INSERT INTO events ({COLUMNS}) VALUES " + ",".join([_ROW_MARKS] * n)
    return sql


#: A request's outcome: the recorded events, the refusal, or the indexes of its
#: rows in the group's ``written`` list (turned into events on the event loop).
Outcome = list[RecordedEvent] | StoreError | range


def write_group_at_tip(
    conn: sqlite3.Connection,
    group: Sequence[tuple[list[Prepared], int | None, int | None]],
    tip: Tip,
    written: list[tuple[Any, ...]],
) -> list[Outcome] | None:
    """Write a group in one autocommit statement, deciding it from ``tip``; None when
    it needs :func:`write_group` (nothing was written then).

    One statement is one ``sqlite3_step``: the insert, the commit and its fsync
    run with the GIL released throughout, so the event loop prepares the next
    appends meanwhile (a transaction's several statements would each hand the
    GIL back and wait for it). Nothing is read first: a group in which any
    request would be refused, repeats an event id, or names a stream the tip
    does not know is left to :func:`write_group`, which reads and decides
    inside a transaction. So are the groups whose insert fails on a unique
    constraint: an event id already recorded (an idempotent repeat), or a
    stale tip (another process appended). ``tip`` is updated on success and
    must be discarded on failure.
    """
    known = tip.versions
    try:
        versions = {p.event.stream: known[p.event.stream] for events, _, _ in group for p in events}
    except KeyError:
        return None
    position, last_hash = tip.position, tip.hash
    recorded_at = recorded_stamp()
    seen: set[str] = set()
    results: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    for events, expected_version, expected_position in group:
        if expected_position is not None and expected_position != position:
            return None
        if expected_version is not None and versions[events[0].event.stream] != expected_version:
            return None
        start = len(rows)
        for p in events:
            e = p.event
            if e.event_id in seen:
                return None
            seen.add(e.event_id)
            position += 1
            version = versions[e.stream] = versions[e.stream] + 1
            row = new_row(p, position, version, recorded_at, last_hash)
            last_hash = row[14]
            rows.append(row)
        results.append(range(start, len(rows)))
    if len(rows) > FAST_ROWS or conn.in_transaction:
        return None
    try:
        conn.execute(_insert_rows(len(rows)), list(chain.from_iterable(rows)))
    except sqlite3.IntegrityError:
        return None
    tip.position, tip.hash = position, last_hash
    known.update(versions)
    written.extend(rows)
    return results


def write_group(
    conn: sqlite3.Connection,
    group: Sequence[tuple[list[Prepared], int | None, int | None]],
    written: list[tuple[Any, ...]] | None = None,
    tip: Tip | None = None,
) -> list[list[RecordedEvent] | StoreError]:
    """Decide and insert a group of append requests; the caller owns the transaction.

    Each request is ``(events, expected_version, expected_position)``; see
    :meth:`eventstore.EventStore.append`. The rows inserted (``COLUMNS`` order,
    ``data`` as its stored text) are added to ``written`` when given. ``tip``,
    when given, is set to where the log ends and the versions of the group's
    streams once these rows are in (valid once the transaction commits).
    """
    last_pos, last_hash = head(conn)
    if tip is not None and (tip.position, tip.hash) != (last_pos, last_hash):
        tip.versions.clear()  # another connection appended: the versions known may be stale
    ids = list({p.event.event_id for events, _, _ in group for p in events})
    existing: dict[str, tuple[tuple[Any, ...], RecordedEvent]] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT {COLUMNS} FROM events WHERE event_id IN ({marks})", chunk):
            existing[row[1]] = (_row_identity(row), row_to_event(row))
    # One statement for every stream's version; the correlated MAX uses the
    # (stream, stream_version) index to seek each stream's last version
    # instead of scanning it.
    streams = list({p.event.stream for events, _, _ in group for p in events})
    versions: dict[str, int] = dict(
        conn.execute(
            "SELECT s.value, COALESCE((SELECT MAX(stream_version) FROM events "
            "WHERE stream = s.value), 0) FROM json_each(?) AS s",
            (orjson.dumps(streams),),
        )
    )
    results: list[list[RecordedEvent] | StoreError] = []
    rows: list[tuple[Any, ...]] = []
    recorded_at = recorded_stamp()
    for events, expected_version, expected_position in group:
        if any(p.event.event_id in existing for p in events):
            try:
                results.append(_repeat(events, existing))
            except StoreError as exc:
                results.append(exc)
            continue
        if expected_position is not None and last_pos != expected_position:
            results.append(LogMovedError(expected_position, last_pos))
            continue
        if expected_version is not None:
            stream = events[0].event.stream
            if versions[stream] != expected_version:
                results.append(ConcurrencyError(stream, expected_version, versions[stream]))
                continue
        recorded: list[RecordedEvent] = []
        for p in events:
            e = p.event
            last_pos += 1
            version = versions[e.stream] = versions[e.stream] + 1
            row = new_row(p, last_pos, version, recorded_at, last_hash)
            last_hash = row[14]
            rows.append(row)
            event = row_to_event(row)
            recorded.append(event)
            # A later request in this group repeating the event is an idempotent repeat.
            existing[e.event_id] = (identity(p), event)
        results.append(recorded)
    if rows:
        conn.executemany(INSERT, rows)
        if written is not None:
            written.extend(rows)
    if tip is not None:
        if len(tip.versions) + len(versions) > TIP_STREAMS:
            tip.versions.clear()
        tip.versions.update(versions)
        tip.position, tip.hash = last_pos, last_hash
    return results


def _repeat(
    events: list[Prepared], existing: dict[str, tuple[tuple[Any, ...], RecordedEvent]]
) -> list[RecordedEvent]:
    """An append whose events are already recorded: the originals, or an error."""
    recorded: list[RecordedEvent] = []
    for p in events:
        hit = existing.get(p.event.event_id)
        if hit is None:
            known = next(q.event.event_id for q in events if q.event.event_id in existing)
            raise DuplicateEventError(
                known,
                existing[known][1].position,
                "but this append also holds new events; an append is all-or-nothing, "
                "so resend exactly the original batch",
            )
        known_identity, event = hit
        if known_identity != identity(p):
            raise DuplicateEventError(
                p.event.event_id,
                event.position,
                "with a different body; an event id names one event forever, "
                "use a new id for a new event",
            )
        recorded.append(event)
    return recorded
