"""Event-log benchmarks: socbridge's store against raw sqlite3 and the eventsourcing library.

Figures (events per second):

- ``append_concurrent_eps``: 32 concurrent appenders, one event per durable
  append, group-committed. Peer: ``peer_eventsourcing_append_eps``.
- ``append_sequential_eps``: one event per durable append, awaited one by one.
- ``replay_eps``: read and decode every event from position 1.
- ``sqlite_limit_batched_eps`` / ``sqlite_limit_read_eps``: raw sqlite3 doing
  the same inserts (same schema, same rows, same group size, same fsync
  policy) and the same read-and-decode: the ceiling for this machine.
- ``peer_eventsourcing_append_eps`` / ``peer_eventsourcing_replay_eps``: the
  eventsourcing library's SQLite recorder, one event per ``save``, and its
  notification log read back through its mapper (only when it is installed).

Every store runs with WAL and ``synchronous=FULL`` (eventsourcing's and
SQLite's default), on files in one temp folder, so fsync cost is the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from daemon.bench.payload import ticket_observation
from eventstore import EventStore, NewEvent
from eventstore.chain import encode_data
from eventstore.schema import migrate
from eventstore.store import _INSERT

CONCURRENCY = 32


async def _concurrent(store: EventStore, total: int) -> float:
    per_worker = total // CONCURRENCY

    async def worker(w: int) -> None:
        for i in range(per_worker):
            n = w * per_worker + i
            await store.append(
                [
                    NewEvent(
                        stream=f"cw:ticket:{w}",
                        type="connectwise.ticket.observed",
                        data=ticket_observation(n),
                        tenant="acme",
                        ticket=f"cw:{w}",
                        source="connectwise",
                    )
                ]
            )

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return per_worker * CONCURRENCY / (time.perf_counter() - start)


async def _sequential(store: EventStore, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        await store.append(
            [
                NewEvent(
                    stream="cw:ticket:seq",
                    type="connectwise.ticket.observed",
                    data=ticket_observation(i),
                    tenant="acme",
                    ticket="cw:seq",
                    source="connectwise",
                )
            ]
        )
    return count / (time.perf_counter() - start)


async def _replay(store: EventStore) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    async for _ in store.read(1, batch_size=2000):
        n += 1
    return n / (time.perf_counter() - start), n


def _sqlite_limit(path: Path, total: int) -> tuple[float, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    migrate(conn, str(path))
    rows = []
    for i in range(total):
        data = encode_data(ticket_observation(i))
        digest = hashlib.sha256(data.encode()).hexdigest()
        rows.append(
            (
                i + 1,
                f"00000000-0000-4000-8000-{i:012d}",
                f"cw:ticket:{i % CONCURRENCY}",
                i // CONCURRENCY + 1,
                "connectwise.ticket.observed",
                1,
                "acme",
                f"cw:{i % CONCURRENCY}",
                None,
                None,
                "connectwise",
                None,
                "2026-11-29T00:00:00.000000Z",
                data,
                digest,
            )
        )
    start = time.perf_counter()
    for k in range(0, total, CONCURRENCY):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows[k : k + CONCURRENCY])
        conn.execute("COMMIT")
    write_eps = total / (time.perf_counter() - start)
    start = time.perf_counter()
    n = 0
    cursor = conn.execute("SELECT * FROM events ORDER BY position")
    while batch := cursor.fetchmany(2000):
        for row in batch:
            orjson.loads(row[13])
            n += 1
    read_eps = n / (time.perf_counter() - start)
    conn.close()
    return write_eps, read_eps


def _peer_eventsourcing(folder: Path, appends: int, replay_events: int) -> dict[str, float]:
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        return {}

    class Ticket(Aggregate):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.name = name

        @event("Observed")  # type: ignore[misc]
        def observe(self, payload: dict[str, Any]) -> None:
            pass

    def app_at(name: str) -> Any:
        return Application(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(folder / name),
            }
        )

    app = app_at("peer-append.db")
    ticket = Ticket("seq")
    app.save(ticket)
    start = time.perf_counter()
    for i in range(appends):
        ticket.observe(ticket_observation(i))
        app.save(ticket)
    append_eps = appends / (time.perf_counter() - start)

    # The replay corpus is built with batched saves (one fsync per 1000
    # events) only to keep the run short; the replay itself is what is timed.
    app = app_at("peer-replay.db")
    tickets = [Ticket(str(i)) for i in range(1000)]
    written = 0
    while written < replay_events:
        for i, t in enumerate(tickets):
            t.observe(ticket_observation(written + i))
        app.save(*tickets)
        written += len(tickets) * 2 if written == 0 else len(tickets)
    start = time.perf_counter()
    n = 0
    position = 1
    while notifications := app.recorder.select_notifications(position, 2000):
        for notification in notifications:
            app.mapper.to_domain_event(notification)
            n += 1
        position = notifications[-1].id + 1
    replay_eps = n / (time.perf_counter() - start)
    return {
        "peer_eventsourcing_append_eps": round(append_eps, 1),
        "peer_eventsourcing_replay_eps": round(replay_eps, 1),
    }


async def run(events: int, sequential: int, folder: Path | None = None) -> dict[str, Any]:
    """Run every store benchmark; return the figures and the ratios to the peer."""
    with tempfile.TemporaryDirectory(prefix="socbridge-bench-", dir=folder) as tmp:
        root = Path(tmp)
        store = await EventStore.open(root / "events.db")
        try:
            concurrent_eps = await _concurrent(store, events)
            sequential_eps = await _sequential(store, sequential)
            replay_eps, replayed = await _replay(store)
        finally:
            await store.close()
        limit_write, limit_read = await asyncio.to_thread(_sqlite_limit, root / "raw.db", events)
        peer = await asyncio.to_thread(_peer_eventsourcing, root, sequential, events)
    figures: dict[str, Any] = {
        "events": replayed,
        "append_concurrent_eps": round(concurrent_eps, 1),
        "append_sequential_eps": round(sequential_eps, 1),
        "replay_eps": round(replay_eps, 1),
        "sqlite_limit_batched_eps": round(limit_write, 1),
        "sqlite_limit_read_eps": round(limit_read, 1),
        **peer,
    }
    if peer:
        p_append = peer["peer_eventsourcing_append_eps"]
        p_replay = peer["peer_eventsourcing_replay_eps"]
        figures["concurrent_vs_peer_append"] = round(concurrent_eps / p_append, 2)
        figures["sequential_vs_peer_append"] = round(sequential_eps / p_append, 2)
        figures["replay_vs_peer_replay"] = round(replay_eps / p_replay, 2)
        figures["targets_met"] = (
            concurrent_eps >= 10 * p_append
            and sequential_eps >= p_append
            and replay_eps >= 2.5 * p_replay
        )
    return figures
