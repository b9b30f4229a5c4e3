"""The writer thread: grouping, ordering with exclusive jobs, cancellation, clean shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import eventstore.store
import eventstore.writer
from eventstore import (
    ConcurrencyError,
    DatabaseCorruptError,
    DuplicateEventError,
    EventStore,
    LogMovedError,
    NewEvent,
    StoreClosedError,
    verify,
)
from tests.support.events import ev


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "eventstore-writer"]


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group the writer writes, in order."""
    sizes: list[int] = []
    real = EventStore._write_group

    def counting(self: EventStore, group: list[Any], written: Any) -> Any:
        sizes.append(len(group))
        return real(self, group, written)

    monkeypatch.setattr(EventStore, "_write_group", counting)
    return sizes


async def test_concurrent_appends_share_transactions_and_stay_dense(
    store: EventStore, groups: list[int]
) -> None:

    async def appender(w: int) -> list[int]:
        return [(await store.append([ev(f"s{w}")]))[0].position for _ in range(10)]

    positions = await asyncio.gather(*(appender(w) for w in range(16)))
    assert sorted(p for ps in positions for p in ps) == list(range(1, 161))
    assert all(ps == sorted(ps) for ps in positions)
    assert sum(groups) == 160
    assert len(groups) < 160  # appends queued together were committed together
    assert (await verify(store)).ok


async def test_exclusive_job_runs_between_the_appends_around_it(store: EventStore) -> None:
    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    before = [asyncio.create_task(store.append([ev("a")])) for _ in range(5)]
    await asyncio.sleep(0)  # the five appends are queued first
    job = asyncio.create_task(store.run_exclusive(count))
    await asyncio.sleep(0)
    after = [asyncio.create_task(store.append([ev("a")])) for _ in range(3)]
    assert await job == 5
    done = await asyncio.gather(*before, *after)
    assert sorted(r[0].position for r in done) == list(range(1, 9))


async def test_job_error_reaches_its_caller_and_the_writer_goes_on(store: EventStore) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM no_such_table")

    def boom(conn: sqlite3.Connection) -> None:
        raise RuntimeError("boom")

    with pytest.raises(Exception, match="no_such_table"):
        await store.run_exclusive(broken)
    with pytest.raises(RuntimeError, match="boom"):
        await store.run_exclusive(boom)
    [rec] = await store.append([ev()])
    assert rec.position == 1


async def test_cancelled_append_does_not_disturb_its_group(store: EventStore) -> None:
    tasks = [asyncio.create_task(store.append([ev(f"s{i}")])) for i in range(6)]
    await asyncio.sleep(0)  # all six are queued
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    # The cancelled caller stopped waiting, but its request was already queued:
    # it is written like the others, and the chain stays whole.
    assert await store.last_position() == 6
    assert (await verify(store)).ok


async def test_close_stops_the_writer_thread(db_path: Path) -> None:
    before = len(writer_threads())
    s = await EventStore.open(db_path)
    assert len(writer_threads()) == before + 1
    await s.append([ev()])
    await s.close()
    assert len(writer_threads()) == before
    with pytest.raises(StoreClosedError):
        await s.run_exclusive(lambda conn: None)


async def test_failed_open_leaves_no_writer_thread(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not sqlite" * 500)
    before = len(writer_threads())
    with pytest.raises(DatabaseCorruptError):
        await EventStore.open(path)
    assert len(writer_threads()) == before


async def test_writer_keeps_full_durability_and_checkpoints_less_often(store: EventStore) -> None:
    def settings(conn: sqlite3.Connection) -> tuple[Any, ...]:
        return tuple(
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "wal_autocheckpoint", "journal_size_limit")
        )

    mode, synchronous, autocheckpoint, limit = await store.run_exclusive(settings)
    assert (mode, synchronous) == ("wal", 2)  # 2 = FULL: every commit fsyncs the WAL
    assert autocheckpoint == eventstore.store.WAL_AUTOCHECKPOINT_PAGES > 1000
    assert limit == eventstore.store.JOURNAL_SIZE_LIMIT_BYTES


async def test_a_whole_queue_the_writer_waited_for_is_written_as_two_groups(
    store: EventStore, groups: list[int]
) -> None:
    # Every appender waiting on one commit would leave the writer idle while they
    # all prepare their next appends; the first half commits while the rest wait.
    done = await asyncio.gather(*(store.append([ev(f"s{i}")]) for i in range(32)))
    assert sorted(r[0].position for r in done) == list(range(1, 33))
    assert groups[0] <= eventstore.store.SPLIT_GROUP
    assert (await verify(store)).ok


async def test_group_holding_repeats_and_new_appends(store: EventStore) -> None:
    [original] = await store.append([ev("a")])
    again = NewEvent(**{**_fields(ev("a")), "event_id": original.event_id})
    clash = NewEvent(**{**_fields(ev("b")), "event_id": original.event_id})
    fresh = ev("c")
    results = await asyncio.gather(
        *(store.append([ev(f"s{i}")]) for i in range(10)),
        store.append([again]),
        store.append([clash]),
        store.append([fresh]),
        store.append([fresh]),  # the same new event twice in one group: written once
        *(store.append([ev(f"t{i}")]) for i in range(10)),
        return_exceptions=True,
    )
    assert results[10] == [original]
    assert isinstance(results[11], DuplicateEventError)
    assert results[12] == results[13]
    written = sorted(r[0].position for r in results if isinstance(r, list))
    assert written[0] == 1 and sorted(set(written[1:])) == list(range(2, 23))
    assert await store.last_position() == 22
    assert (await verify(store)).ok


async def test_appends_by_another_process_between_groups_are_seen(db_path: Path) -> None:
    a = await EventStore.open(db_path)
    b = await EventStore.open(db_path)
    try:
        await a.append([ev("x"), ev("y")])  # a now knows where the log ends
        [other] = await b.append([ev("x")])
        assert other.position == 3 and other.stream_version == 2
        with pytest.raises(ConcurrencyError):
            await a.append([ev("x")], expected_version=1)
        with pytest.raises(LogMovedError):
            await a.append([ev("y")], expected_position=2)
        [mine] = await a.append([ev("x")], expected_version=2)
        assert (mine.position, mine.stream_version) == (4, 3)
        await b.append([ev("y")])
        [last] = await a.append([ev("y")], expected_position=5)
        assert (last.position, last.stream_version) == (6, 3)
        assert (await verify(a)).ok
    finally:
        await a.close()
        await b.close()


async def test_exclusive_job_that_writes_events_moves_the_tip(store: EventStore) -> None:
    await store.append([ev("x")])

    def append_inside(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        eventstore.writer.write_group(
            conn, [(eventstore.writer.prepare([ev("x"), ev("z")], None), None, None)]
        )
        conn.execute("COMMIT")

    await store.run_exclusive(append_inside)
    [rec] = await store.append([ev("x")])
    assert (rec.position, rec.stream_version) == (4, 3)
    assert (await verify(store)).ok


def _fields(event: NewEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in NewEvent.__dataclass_fields__}
