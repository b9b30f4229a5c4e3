"""Projection rows and their checkpoint, saved in one transaction in the event log's file.

The links, the outbox, the abandoned commands and a few counters are kept as
JSON rows in ``projection_*`` tables beside the events, and the position they
were folded up to is saved in the same transaction, through the event store's
own writer connection. A crash therefore leaves rows and checkpoint agreeing,
and start-up resumes folding from the checkpoint. Only rows that changed
since the last save are written.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import structlog

from eventstore import EventStore, RecordedEvent
from projections.fold import apply
from projections.state import (
    META_KEYS,
    BridgeState,
    Json,
    ModelError,
    decode_command,
    decode_link,
    decode_meta,
    encode_command,
    encode_link,
    encode_meta,
)

NAME = "bridge"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS projection_checkpoints ("
    " name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_links ("
    " link_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_outbox ("
    " command_id TEXT PRIMARY KEY, link_id TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_meta (key TEXT PRIMARY KEY, body TEXT NOT NULL)",
)
#: The row tables and their key column, in the order :meth:`ProjectionStore.load` reads them.
_ROWS = (
    ("projection_links", "link_id"),
    ("projection_outbox", "command_id"),
    ("projection_meta", "key"),
)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (taken at once: ``BEGIN IMMEDIATE``), committed when the
    block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def save_checkpoint(conn: sqlite3.Connection, position: int) -> None:
    """Record that the projection rows reflect the log up to ``position``."""
    conn.execute("INSERT OR REPLACE INTO projection_checkpoints VALUES (?, ?)", (NAME, position))


def _ensure_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)


def _dump(value: Json) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _digest(body: bytes) -> bytes:
    """What a save remembers of a row it wrote (or a load read): enough to tell whether the
    next body differs, not the body. An ``orjson.dumps`` result kept alive pins far more
    memory than its length (the allocator cannot reuse the rest of its output buffer), so
    keeping every pending command's body grew the daemon by kilobytes per command."""
    return hashlib.blake2b(body, digest_size=16).digest()


def _decode(
    position: int,
    links: list[tuple[str, bytes]],
    outbox: list[tuple[str, bytes]],
    meta: list[tuple[str, bytes]],
) -> BridgeState:
    """The state the rows hold; :class:`ModelError` for a row of another shape."""
    loads = orjson.loads
    state = BridgeState(position=position)
    state.links = {link_id: decode_link(loads(body)) for link_id, body in links}
    state.outbox = {command_id: decode_command(loads(body)) for command_id, body in outbox}
    for key, body in meta:
        decode_meta(state, key, loads(body))
    state.derive_indexes()
    return state


class ProjectionStore:
    """Loads and saves the bridge projection next to the events it was folded from."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        # Row key -> digest of the body it holds (see _digest).
        self._saved_links: dict[str, bytes] = {}
        self._saved_outbox: dict[str, bytes] = {}
        self._saved_meta: dict[str, bytes] = {}
        # One save at a time: each diffs against what the previous one wrote.
        self._saving = asyncio.Lock()
        self._log = structlog.get_logger("socbridge.projections")
        #: Whether the rows' bytes are known (a load or a save read or wrote them).
        self._loaded = False

    async def load(self) -> BridgeState:
        """The saved state (empty at position 0 when nothing was saved yet)."""
        await self.store.run_exclusive(_ensure_schema)

        def read(conn: sqlite3.Connection) -> tuple[Any, ...]:
            # One read transaction, so rows and checkpoint agree. The bodies come
            # back as bytes (CAST): what orjson decodes and what the next save
            # compares against, with no str in between.
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT position FROM projection_checkpoints WHERE name = ?", (NAME,)
                ).fetchone()
                found = tuple(
                    conn.execute(f"SELECT {key}, CAST(body AS BLOB) FROM {table}").fetchall()
                    for table, key in _ROWS
                )
            finally:
                conn.execute("COMMIT")
            return (row[0] if row else 0), *found

        position, links, outbox, meta = await self.store.read_connection_call(read)
        # What the rows hold, as digests: each save writes only the rows that differ.
        self._loaded = True
        self._saved_links = {key: _digest(body) for key, body in links}
        self._saved_outbox = {key: _digest(body) for key, body in outbox}
        self._saved_meta = {key: _digest(body) for key, body in meta}
        # Thousands of nested records, all kept: the cyclic collector would scan the
        # growing heap again and again while they are built, for nothing.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return _decode(position, links, outbox, meta)
        except (ModelError, KeyError, TypeError, ValueError) as exc:
            # Rows this version cannot read are never misread: the state is rebuilt by
            # folding the whole log, and the next save replaces the rows.
            self._log.warning("projection.rebuilt_from_log", reason=f"saved rows unreadable: {exc}")
            return BridgeState()
        finally:
            if collecting:
                gc.enable()

    async def save(self, state: BridgeState, when: Callable[[], bool] | None = None) -> int:
        """Write changed rows and the checkpoint in one transaction; return rows written.

        The rows are taken once the previous save is done: ``when``, checked then,
        says whether ``state`` may still be saved (``-1`` is returned when not), since
        its owner may have moved on while this save waited.
        """
        async with self._saving:
            if when is not None and not when():
                return -1
            return await self._save(state)

    async def _save(self, state: BridgeState) -> int:
        # Only the links folded into since the last save can differ from their rows (all of
        # them before the first save, when nothing says what the rows hold).
        touched = set(state.touched) if self._loaded else set(state.links)
        state.touched.clear()
        try:
            return await self._write(state, touched)
        except BaseException:
            state.touched |= touched  # not saved: still to be written next time
            raise

    async def _write(self, state: BridgeState, touched: set[str]) -> int:
        link_rows = []
        for link_id in touched:
            link = state.links.get(link_id)
            if link is None:
                continue
            body = _dump(encode_link(link))
            if self._saved_links.get(link_id) != _digest(body):
                link_rows.append((link_id, link.tenant, link.state, body))
        outbox_rows = []
        for command_id, command in state.outbox.items():
            body = _dump(encode_command(command))
            if self._saved_outbox.get(command_id) != _digest(body):
                outbox_rows.append((command_id, command.link_id, body))
        gone = [c for c in self._saved_outbox if c not in state.outbox]
        meta_rows = []
        for key in META_KEYS:
            body = _dump(encode_meta(state, key))
            if self._saved_meta.get(key) != _digest(body):
                meta_rows.append((key, body))
        position = state.position

        def write(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO projection_links VALUES (?, ?, ?, ?)",
                    [(a, b, c, d.decode()) for a, b, c, d in link_rows],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO projection_outbox VALUES (?, ?, ?)",
                    [(a, b, c.decode()) for a, b, c in outbox_rows],
                )
                conn.executemany(
                    "DELETE FROM projection_outbox WHERE command_id = ?", [(c,) for c in gone]
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO projection_meta VALUES (?, ?)",
                    [(k, b.decode()) for k, b in meta_rows],
                )
                save_checkpoint(conn, position)

        await self.store.run_exclusive(write)
        for link_id, _, _, body in link_rows:
            self._saved_links[link_id] = _digest(body)
        for command_id, _, body in outbox_rows:
            self._saved_outbox[command_id] = _digest(body)
        for command_id in gone:
            del self._saved_outbox[command_id]
        for key, body in meta_rows:
            self._saved_meta[key] = _digest(body)
        self._loaded = True
        return len(link_rows) + len(outbox_rows) + len(gone) + len(meta_rows)


async def rebuild(
    events: AsyncIterator[RecordedEvent], state: BridgeState | None = None
) -> BridgeState:
    """Fold ``events`` (normally the whole log from position 1) into a fresh state."""
    state = state if state is not None else BridgeState()
    async for event in events:
        apply(state, event)
    return state
