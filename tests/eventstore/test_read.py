"""Reading: forward in batches, by stream, by ticket, and live subscription."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from eventstore import EventStore, NewEvent, RecordedEvent, StoreError
from tests.support.events import ev


async def test_read_forward_in_batches_from_a_position(store: EventStore) -> None:
    recs = await store.append([ev(f"s{i % 4}", data={"i": i}) for i in range(25)])
    got = [e async for e in store.read(1, batch_size=4)]
    assert got == recs
    assert [e.position async for e in store.read(11, batch_size=3)] == list(range(11, 26))
    assert [e.position async for e in store.read(3, until=7)] == [3, 4, 5, 6, 7]
    assert [e async for e in store.read(26)] == []


async def test_read_stream_ticket_and_last(store: EventStore) -> None:
    await store.append([ev("cw:ticket:1", tenant="acme", ticket="cw:1", data={"v": 1})])
    await store.append([ev("cw:ticket:2", tenant="acme", ticket="cw:2")])
    await store.append([ev("link:1", type="sync.tickets.linked", tenant="acme", ticket="cw:1")])
    await store.append([ev("cw:ticket:1", tenant="acme", ticket="cw:1", data={"v": 2})])
    await store.append([ev("cw:ticket:1", tenant="globex", ticket="cw:1")])
    stream = await store.read_stream("cw:ticket:1")
    assert [e.stream_version for e in stream] == [1, 2, 3]
    assert [e.stream_version for e in await store.read_stream("cw:ticket:1", 2)] == [2, 3]
    ticket = await store.read_ticket("acme", "cw:1")
    assert [e.position for e in ticket] == [1, 3, 4]
    last = await store.last_in_stream("cw:ticket:1")
    assert last is not None and last.position == 5
    assert await store.last_in_stream("nope") is None
    assert (await store.get(ticket[1].event_id)) == ticket[1]


async def test_subscribe_catches_up_then_follows_live(store: EventStore) -> None:
    before = await store.append([ev(data={"i": i}) for i in range(3)])
    seen: list[RecordedEvent] = []
    caught_up = asyncio.Event()
    done = asyncio.Event()

    async def follow() -> None:
        async for event in store.subscribe(1):
            seen.append(event)
            if len(seen) == 3:
                caught_up.set()
            if len(seen) == 6:
                done.set()
                return

    task = asyncio.create_task(follow())
    await asyncio.wait_for(caught_up.wait(), 5)
    live = []
    for i in range(3):
        live += await store.append([ev(data={"live": i})])
    await asyncio.wait_for(done.wait(), 5)
    await task
    assert seen == before + live


async def first_event_of(store: EventStore, **subscribe_kw: float) -> RecordedEvent:
    async for event in store.subscribe(1, **subscribe_kw):
        return event
    raise AssertionError("subscription ended without an event")


async def test_subscribe_is_woken_by_the_append_itself(store: EventStore) -> None:
    # With the re-check for other processes pushed out to an hour, only the
    # append's own wake-up can deliver the event within the deadline.
    waiting = asyncio.create_task(first_event_of(store, foreign_check_s=3600))
    await asyncio.sleep(0)  # let the subscriber reach its wait
    [rec] = await store.append([ev()])
    assert await asyncio.wait_for(waiting, 5) == rec


async def test_subscribe_sees_appends_from_another_process_store(
    store: EventStore, db_path: Path
) -> None:
    other = await EventStore.open(db_path)
    waiting = asyncio.create_task(first_event_of(store))
    [rec] = await other.append([ev("from-other")])
    assert await asyncio.wait_for(waiting, 5) == rec
    await other.close()


@asynccontextmanager
async def reader_thread_held(store: EventStore) -> AsyncIterator[None]:
    """Keep the store's reader thread busy until the block ends: a read needing it waits."""
    holding, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        holding.set()
        release.wait(10)

    held = asyncio.create_task(store.read_connection_call(hold))
    try:
        assert await asyncio.to_thread(holding.wait, 5)
        yield
    finally:
        release.set()
        await held


async def test_a_live_subscriber_takes_own_appends_without_reading_them_back(
    store: EventStore,
) -> None:
    received: asyncio.Queue[RecordedEvent] = asyncio.Queue()

    async def follow() -> None:
        async for event in store.subscribe(1, foreign_check_s=3600):
            await received.put(event)

    task = asyncio.create_task(follow())
    [first] = await store.append([ev()])
    # Once the first event is taken, the subscriber has asked the reader thread for
    # what follows; the hold below queues behind that read.
    assert await asyncio.wait_for(received.get(), 5) == first
    try:
        async with reader_thread_held(store):
            # With the reader thread held, only the rows the writer committed can
            # deliver the next event in time.
            [second] = await store.append([ev(data={"n": 2})])
            assert await asyncio.wait_for(received.get(), 5) == second
    finally:
        task.cancel()


async def test_a_bounded_read_of_own_recent_appends_needs_no_reader_thread(
    store: EventStore, db_path: Path
) -> None:
    recs = await store.append([ev(data={"n": i}) for i in range(5)])
    async with reader_thread_held(store):
        assert await asyncio.wait_for(store.read_batch(2, 10, until=4), 5) == recs[1:4]
    # A range holding another process's append is read from the file.
    other = await EventStore.open(db_path)
    try:
        [foreign] = await other.append([ev(data={"foreign": 1})])
    finally:
        await other.close()
    [mine] = await store.append([ev(data={"mine": 1})])
    assert await store.read_batch(5, 10, until=7) == [recs[4], foreign, mine]
    assert await store.read_batch(6, 1, until=7) == [foreign]


async def test_appends_of_another_process_between_own_ones_reach_subscribers_in_order(
    store: EventStore, db_path: Path
) -> None:
    other = await EventStore.open(db_path)
    try:
        recs: list[RecordedEvent] = []
        for n in range(5):
            recs += await (store if n % 2 == 0 else other).append([ev(data={"n": n})])
    finally:
        await other.close()
    # This store committed positions 1, 3 and 5 itself; 2 and 4 are only in the file.
    for start in (1, 3):
        seen: list[RecordedEvent] = []
        async for event in store.subscribe(start):
            seen.append(event)
            if event.position == 5:
                break
        assert seen == recs[start - 1 :]


async def test_subscribers_never_share_an_events_data(store: EventStore) -> None:
    a = asyncio.create_task(first_event_of(store, foreign_check_s=3600))
    b = asyncio.create_task(first_event_of(store, foreign_check_s=3600))
    await asyncio.sleep(0)
    [rec] = await store.append([ev(data={"nested": {"n": 1}})])
    got_a, got_b = await asyncio.wait_for(asyncio.gather(a, b), 5)
    assert got_a == got_b == rec
    assert got_a.data is not got_b.data and got_a.data is not rec.data
    got_a.data["nested"]["n"] = 2  # a fold that mutates what it was given harms no one else
    assert got_b.data == rec.data == {"nested": {"n": 1}}


async def test_subscription_ends_when_store_closes(db_path: Path) -> None:
    s = await EventStore.open(db_path)
    await s.append([ev()])
    seen: list[RecordedEvent] = []
    first = asyncio.Event()

    async def follow() -> None:
        async for event in s.subscribe(1):
            seen.append(event)
            first.set()

    task = asyncio.create_task(follow())
    await asyncio.wait_for(first.wait(), 5)
    await s.close()
    await asyncio.wait_for(task, 5)
    assert len(seen) == 1


async def test_reads_return_exactly_what_was_appended_whatever_the_text(
    store: EventStore,
) -> None:
    # Reads decode each row from one JSON array that SQLite assembles: quotes,
    # backslashes, brackets, non-ASCII text, nulls and nested data must come
    # back exactly as appended.
    odd = 'we"ird\\name]] \u00e9\u4e2d\U0001f600 ,"x"]'
    new = NewEvent(
        stream=f"cw:ticket:{odd}",
        type=f"type{odd}",
        data={"s": odd, "n": [1, 2.5, None, True, {"k": odd}], "e": {}, "big": 2**62},
        tenant=odd,
        ticket=odd,
        causation_id=odd,
        correlation_id=None,
        source=odd,
        occurred_at=odd,
        schema_version=7,
    )
    recs = await store.append([new, ev(data={})])
    assert [e async for e in store.read()] == recs
    assert await store.read_stream(new.stream) == recs[:1]
    assert await store.read_ticket(odd, odd) == recs[:1]
    assert await store.get(new.event_id) == recs[0]
    assert recs[0].data == new.data and recs[1].data == {}


def smuggle_a_second_value(db_path: Path, position: int) -> None:
    """Edit one row's data into two JSON values, with the append-only trigger dropped."""
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("DROP TRIGGER events_refuse_update")
    raw.execute(
        """UPDATE events SET data = '{"i": 1}, "smuggled"' WHERE position = ?""", (position,)
    )
    raw.close()


async def test_a_row_whose_data_is_not_one_json_value_is_refused_not_misread(
    db_path: Path,
) -> None:
    s = await EventStore.open(db_path)
    await s.append([ev(data={"i": 1})])
    await s.close()
    smuggle_a_second_value(db_path, 1)
    s = await EventStore.open(db_path)
    try:
        with pytest.raises(StoreError, match="position 1 does not decode"):
            [e async for e in s.read()]
    finally:
        await s.close()


async def test_read_batches_prefetches_in_order_and_can_stop_early(store: EventStore) -> None:
    recs = await store.append([ev(f"s{i % 3}", data={"i": i}) for i in range(23)])
    batches = [b async for b in store.read_batches(2, batch_size=5, until=21)]
    assert [len(b) for b in batches] == [5, 5, 5, 5]
    assert [e for b in batches for e in b] == recs[1:21]
    # A consumer that stops after the first batch leaves no read running or failing.
    reader = store.read_batches(1, batch_size=4)
    first = await reader.__anext__()
    await reader.aclose()
    assert first == recs[:4]
    assert [e async for e in store.read(20, batch_size=4)] == recs[19:]


async def test_a_log_that_ends_on_a_batch_boundary_reads_whole_with_no_empty_batch(
    store: EventStore,
) -> None:
    recs = await store.append([ev(data={"i": i}) for i in range(12)])
    batches = [b async for b in store.read_batches(1, batch_size=4)]
    assert [len(b) for b in batches] == [4, 4, 4]
    assert [e for b in batches for e in b] == recs


async def test_decoding_a_batch_leaves_the_garbage_collector_as_it_found_it(
    db_path: Path,
) -> None:
    s = await EventStore.open(db_path)
    await s.append([ev(data={"i": i}) for i in range(5)])
    try:
        assert gc.isenabled()
        assert len([e async for e in s.read(batch_size=2)]) == 5
        assert gc.isenabled()
        gc.disable()
        try:
            assert len([e async for e in s.read(batch_size=2)]) == 5
            assert not gc.isenabled()  # the caller's choice stands
        finally:
            gc.enable()
    finally:
        await s.close()
    # The per-row fallback for a malformed batch switches it back on too.
    smuggle_a_second_value(db_path, 2)
    s = await EventStore.open(db_path)
    try:
        with pytest.raises(StoreError, match="position 2 does not decode"):
            [e async for e in s.read(batch_size=2)]
        assert gc.isenabled()
    finally:
        await s.close()
