"""NDJSON export and import of the event log, chain and all.

An export line is one event as :meth:`RecordedEvent.to_dict` gives it, in
position order. Import checks every line (fields, dense positions, stream
versions, the hash chain continuing from what the log already holds) and
writes all of it in one transaction, or nothing: a truncated, edited or
reordered file is refused with the line that is wrong. Lines the log already
holds identically are skipped, so an interrupted import can simply be re-run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import orjson

from eventstore.chain import GENESIS_HASH, encode_data
from eventstore.errors import ImportError_
from eventstore.progress import PROGRESS_EVERY, OnProgress
from eventstore.store import EventStore
from eventstore.verify import ChainWalker
from eventstore.writer import COLUMNS, INSERT

_FIELDS: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    # name, accepted types, may be null
    ("position", (int,), False),
    ("event_id", (str,), False),
    ("stream", (str,), False),
    ("stream_version", (int,), False),
    ("type", (str,), False),
    ("schema_version", (int,), False),
    ("tenant", (str,), True),
    ("ticket", (str,), True),
    ("causation_id", (str,), True),
    ("correlation_id", (str,), True),
    ("source", (str,), False),
    ("occurred_at", (str,), True),
    ("recorded_at", (str,), False),
)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """How many lines were read, written and skipped as already present."""

    read: int
    imported: int
    skipped: int
    last_position: int


async def export_ndjson(
    store: EventStore,
    out: IO[bytes],
    *,
    from_position: int = 1,
    on_progress: OnProgress | None = None,
) -> int:
    """Write every event from ``from_position`` to ``out`` as NDJSON; return the count.

    ``on_progress`` is told the events written after each batch of them."""
    total = None
    if on_progress is not None:
        total = max(0, await store.last_position() - from_position + 1)
    count = 0
    position = from_position
    while True:

        def fetch(conn: sqlite3.Connection, start: int = position) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE position >= ? ORDER BY position LIMIT 5000",
                (start,),
            ).fetchall()

        rows = await store.read_connection_call(fetch)
        if not rows:
            return count
        chunk = bytearray()
        for row in rows:
            chunk += _line(row)
        out.write(chunk)
        count += len(rows)
        position = rows[-1][0] + 1
        if on_progress is not None:
            on_progress(count, total)


def _line(row: tuple[Any, ...]) -> bytes:
    record = {name: row[i] for i, (name, _, _) in enumerate(_FIELDS)}
    # The data column is already canonical JSON: embed it as is.
    record["data"] = orjson.Fragment(row[13])
    record["hash"] = row[14]
    return orjson.dumps(record) + b"\n"


def parse_line(number: int, raw: bytes) -> tuple[Any, ...]:
    """One NDJSON line as a row in ``COLUMNS`` order, or :class:`ImportError_`."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ImportError_(number, f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ImportError_(number, "a line must be a JSON object")
    values: list[Any] = []
    for name, types, nullable in _FIELDS:
        if name not in record:
            raise ImportError_(number, f"field {name!r} is missing")
        value = record[name]
        if value is None and nullable:
            values.append(None)
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise ImportError_(number, f"field {name!r} has the wrong type")
        values.append(value)
    if "data" not in record or not isinstance(record["data"], dict):
        raise ImportError_(number, "field 'data' must be a JSON object")
    if not isinstance(record.get("hash"), str):
        raise ImportError_(number, "field 'hash' is missing")
    values.append(encode_data(record["data"]))
    values.append(record["hash"])
    extra = set(record) - {name for name, _, _ in _FIELDS} - {"data", "hash"}
    if extra:
        raise ImportError_(number, f"unknown fields {sorted(extra)}")
    return tuple(values)


def import_rows(
    conn: sqlite3.Connection, lines: Iterable[bytes], on_progress: OnProgress | None = None
) -> ImportReport:
    """Writer thread: check and insert every line in one transaction, or nothing.

    ``on_progress`` is told the lines read so far (their total only at the end)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        have_pos, have_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)
        versions = dict(
            conn.execute("SELECT stream, MAX(stream_version) FROM events GROUP BY stream")
        )
        walker = ChainWalker(have_pos, have_hash, versions)
        read = imported = skipped = 0
        batch: list[tuple[Any, ...]] = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            read += 1
            if on_progress is not None and read % PROGRESS_EVERY == 0:
                on_progress(read, None)
            values = parse_line(number, raw)
            if values[0] <= have_pos:
                stored = conn.execute(
                    "SELECT hash FROM events WHERE position = ?", (values[0],)
                ).fetchone()
                if stored is None or stored[0] != values[14]:
                    raise ImportError_(
                        number,
                        f"position {values[0]} is already in the log with different content; "
                        "this file is not an export of this log (import into an empty file)",
                    )
                skipped += 1
                continue
            problem = walker.check(values)
            if problem is not None:
                raise ImportError_(number, problem)
            batch.append(values)
            if len(batch) >= 5000:
                imported += _insert(conn, batch, number)
                batch = []
        imported += _insert(conn, batch, read)
        conn.execute("COMMIT")
        if on_progress is not None:
            on_progress(read, read)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return ImportReport(read, imported, skipped, walker.prev_position)


def _insert(conn: sqlite3.Connection, batch: list[tuple[Any, ...]], number: int) -> int:
    try:
        conn.executemany(INSERT, batch)
    except sqlite3.IntegrityError as exc:
        raise ImportError_(number, f"an event id repeats one already in the log ({exc})") from None
    return len(batch)


async def import_ndjson(
    store: EventStore, source: IO[bytes], on_progress: OnProgress | None = None
) -> ImportReport:
    """Import an NDJSON export into ``store``; all of it, or nothing. ``on_progress`` is
    called from the store's writer thread."""
    return await store.run_exclusive(lambda conn: import_rows(conn, source, on_progress))
