"""The writer's side of an append: validate in the caller's task, then write a group at once.

:func:`prepare` runs in the appending task, so a malformed event fails at its
call site and never reaches the writer. :func:`write_group` runs on the writer
thread inside one transaction: it looks up every event id and every stream
version the whole group needs in two queries, decides each request in Python
(idempotent repeat, version conflict, or new events with positions, versions
and chained hashes), and inserts all new rows with one ``executemany``. A
request that is refused writes nothing and does not disturb its neighbours,
because nothing is written until every request has been decided.
"""

from __future__ import annotations

import gc
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
    """An event validated and encoded in the caller's task, with its identity."""

    event: NewEvent
    data_text: str
    identity: tuple[Any, ...]


def prepare(events: Sequence[NewEvent], expected_version: int | None) -> list[Prepared]:
    """Validate and encode ``events``; raise :class:`InvalidEventError` on the first bad one."""
    prepared: list[Prepared] = []
    seen: set[str] = set()
    for event in events:
        if not isinstance(event, NewEvent):
            raise InvalidEventError(f"append takes NewEvent objects, not {type(event).__name__}")
        _check_text(event, "stream", event.stream)
        _check_text(event, "type", event.type)
        _check_text(event, "source", event.source)
        if not isinstance(event.schema_version, int) or isinstance(event.schema_version, bool):
            raise InvalidEventError(f"event {event.event_id}: schema_version must be an int")
        for name in ("tenant", "ticket", "causation_id", "correlation_id", "occurred_at"):
            value = getattr(event, name)
            if value is not None and not isinstance(value, str):
                raise InvalidEventError(f"event {event.event_id}: {name} must be a string or None")
        if not isinstance(event.event_id, str) or not _UUID.fullmatch(event.event_id):
            raise InvalidEventError(f"event id {event.event_id!r} is not a UUID")
        if event.event_id in seen:
            raise InvalidEventError(f"event id {event.event_id} appears twice in one append")
        seen.add(event.event_id)
        try:
            data_text = encode_data(dict(event.data))
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            raise InvalidEventError(
                f"event {event.event_id} ({event.type}): data is not JSON-serialisable: {exc}"
            ) from None
        identity = (
            event.stream,
            event.type,
            event.schema_version,
            event.tenant,
            event.ticket,
            event.causation_id,
            event.correlation_id,
            event.source,
            event.occurred_at,
            data_text,
        )
        prepared.append(Prepared(event, data_text, identity))
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


def write_group(
    conn: sqlite3.Connection,
    group: Sequence[tuple[list[Prepared], int | None, int | None]],
    written: list[tuple[Any, ...]] | None = None,
) -> list[list[RecordedEvent] | StoreError]:
    """Decide and insert a group of append requests; the caller owns the transaction.

    Each request is ``(events, expected_version, expected_position)``; see
    :meth:`eventstore.EventStore.append`. The rows inserted (``COLUMNS`` order,
    ``data`` as its stored text) are added to ``written`` when given.
    """
    last_pos, last_hash = head(conn)
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
            fields = (
                last_pos,
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
            last_hash = event_hash(last_hash, fields)
            row = (*fields, last_hash)
            rows.append(row)
            event = row_to_event(row)
            recorded.append(event)
            # A later request in this group repeating the event is an idempotent repeat.
            existing[e.event_id] = (p.identity, event)
        results.append(recorded)
    if rows:
        conn.executemany(INSERT, rows)
        if written is not None:
            written.extend(rows)
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
        identity, event = hit
        if identity != p.identity:
            raise DuplicateEventError(
                p.event.event_id,
                event.position,
                "with a different body; an event id names one event forever, "
                "use a new id for a new event",
            )
        recorded.append(event)
    return recorded
