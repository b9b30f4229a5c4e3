"""Appending: positions, idempotency, optimistic concurrency, atomic batches, bad input."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from eventstore import (
    ConcurrencyError,
    DuplicateEventError,
    EventStore,
    InvalidEventError,
    LogMovedError,
    NewEvent,
    derived_event_id,
)
from tests.support.events import ev


async def count_rows(store: EventStore) -> int:
    return len([e async for e in store.read()])


async def test_positions_are_dense_and_streams_versioned(store: EventStore) -> None:
    recs = await store.append([ev("a"), ev("b"), ev("a")])
    more = await store.append([ev("a")])
    assert [r.position for r in recs + more] == [1, 2, 3, 4]
    assert [(r.stream, r.stream_version) for r in recs + more] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("a", 3),
    ]
    assert await store.last_position() == 4
    assert store.appended_through == 4  # known without a read


async def test_recorded_event_carries_every_field(store: EventStore) -> None:
    new = NewEvent(
        stream="soc:ticket:7",
        type="soc.ticket.observed",
        data={"id": 7, "status": "open", "nested": {"b": 2, "a": [1, 2.5, None]}},
        tenant="acme",
        ticket="soc:7",
        causation_id="c-1",
        correlation_id="k-1",
        source="soc",
        occurred_at="2026-11-29T04:00:00Z",
        schema_version=2,
    )
    [rec] = await store.append([new])
    [read] = [e async for e in store.read()]
    assert read == rec
    assert (rec.tenant, rec.ticket, rec.causation_id, rec.correlation_id) == (
        "acme",
        "soc:7",
        "c-1",
        "k-1",
    )
    assert (rec.source, rec.occurred_at, rec.schema_version) == ("soc", "2026-11-29T04:00:00Z", 2)
    assert rec.data == new.data
    assert rec.recorded_at.endswith("Z") and len(rec.hash) == 64


async def test_same_event_appended_twice_is_written_once(store: EventStore) -> None:
    eid = derived_event_id("connectwise", "message-42")
    first = await store.append([ev(event_id=eid)])
    await store.append([ev("other")])
    again = await store.append([ev(event_id=eid)])
    assert again == first
    assert await count_rows(store) == 2


async def test_same_event_id_with_another_body_is_refused(store: EventStore) -> None:
    eid = derived_event_id("connectwise", "message-43")
    [first] = await store.append([ev(event_id=eid, data={"status": "New"})])
    with pytest.raises(DuplicateEventError) as err:
        await store.append([ev(event_id=eid, data={"status": "Solved"})])
    assert eid in str(err.value) and "position 1" in str(err.value)
    assert err.value.position == first.position
    assert await count_rows(store) == 1


async def test_expected_version_mismatch_names_stream_expected_and_actual(
    store: EventStore,
) -> None:
    await store.append([ev("s"), ev("s")])
    with pytest.raises(ConcurrencyError) as err:
        await store.append([ev("s")], expected_version=1)
    assert (err.value.stream, err.value.expected, err.value.actual) == ("s", 1, 2)
    assert "'s'" in str(err.value) and "2" in str(err.value) and "1" in str(err.value)
    [rec] = await store.append([ev("s")], expected_version=2)
    assert rec.stream_version == 3


async def test_expected_version_zero_means_new_stream(store: EventStore) -> None:
    await store.append([ev("fresh")], expected_version=0)
    with pytest.raises(ConcurrencyError):
        await store.append([ev("fresh")], expected_version=0)


async def test_expected_position_appends_only_where_the_log_ends(store: EventStore) -> None:
    await store.append([ev("a"), ev("b")])
    decided = [ev("d"), ev("d")]
    with pytest.raises(LogMovedError) as err:
        await store.append(decided, expected_position=1)  # decided on a log of one event
    assert (err.value.expected, err.value.actual) == (1, 2)
    assert "position 2" in str(err.value) and "expected 1" in str(err.value)
    assert await count_rows(store) == 2  # nothing of the refused batch was written
    recorded = await store.append(decided, expected_position=2)
    assert [r.position for r in recorded] == [3, 4]
    # A repeat of what is recorded is returned as recorded, wherever the log ends now.
    await store.append([ev("c")])
    assert await store.append(decided, expected_position=2) == recorded
    with pytest.raises(InvalidEventError):
        await store.append([ev("e")], expected_position=-1)


async def test_expected_position_holds_within_one_group_commit(store: EventStore) -> None:
    # Appends queued together are written in one transaction: the first that finds the
    # log where it expects it wins, one expecting the same position after it is refused.
    results = await asyncio.gather(
        *(store.append([ev(f"s{n}")], expected_position=0) for n in range(8)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1 and won[0][0].position == 1
    assert all(isinstance(r, LogMovedError) for r in results if r not in won)
    assert await count_rows(store) == 1


async def test_batch_is_atomic(store: EventStore) -> None:
    await store.append([ev("s")])
    with pytest.raises(ConcurrencyError):
        await store.append([ev("s"), ev("s"), ev("s")], expected_version=0)
    assert await count_rows(store) == 1
    [existing] = [e async for e in store.read()]
    # An append mixing an already-recorded event with new ones is refused whole.
    with pytest.raises(DuplicateEventError):
        await store.append([ev("t"), ev("s", event_id=existing.event_id, data=existing.data)])
    assert await count_rows(store) == 1


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (NewEvent(stream="", type="t", data={}), "stream"),
        (NewEvent(stream="s", type="", data={}), "type"),
        (NewEvent(stream="s", type="t", data={}, event_id="not-a-uuid"), "UUID"),
        (NewEvent(stream="s", type="t", data={"x": object()}), "JSON"),
        (NewEvent(stream="s", type="t", data={"x": 2**70}), "JSON"),
    ],
)
async def test_bad_event_is_refused_and_nothing_written(
    store: EventStore, event: NewEvent, message: str
) -> None:
    with pytest.raises(InvalidEventError, match=message):
        await store.append([ev("ok"), event])
    assert await count_rows(store) == 0


async def test_expected_version_needs_one_stream(store: EventStore) -> None:
    with pytest.raises(InvalidEventError, match="one stream"):
        await store.append([ev("a"), ev("b")], expected_version=0)


async def test_one_failing_append_does_not_fail_its_group(store: EventStore) -> None:
    await store.append([ev("contested")])
    results = await asyncio.gather(
        *(store.append([ev(f"s{i}")]) for i in range(20)),
        store.append([ev("contested")], expected_version=0),
        *(store.append([ev(f"t{i}")]) for i in range(20)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], ConcurrencyError)
    assert await count_rows(store) == 41
    positions = sorted(r[0].position for r in results if isinstance(r, list))
    assert positions == list(range(2, 42))


async def test_database_refuses_update_and_delete(store: EventStore, db_path: Path) -> None:
    await store.append([ev()])
    raw = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE events SET data = '{}' WHERE position = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM events")
    raw.close()
    assert await count_rows(store) == 1


async def test_appends_are_durable_across_reopen(db_path: Path) -> None:
    s = await EventStore.open(db_path)
    recs = await s.append([ev(), ev("b")])
    await s.close()
    s = await EventStore.open(db_path)
    assert [e async for e in s.read()] == recs
    [nxt] = await s.append([ev("c")])
    assert nxt.position == 3
    await s.close()


async def test_two_stores_on_one_file_keep_one_dense_chain(db_path: Path) -> None:
    from eventstore import verify

    a = await EventStore.open(db_path)
    b = await EventStore.open(db_path)
    await asyncio.gather(*(x.append([ev(f"s{i % 3}")]) for i in range(30) for x in (a, b)))
    report = await verify(a)
    assert report.ok and report.checked == 60
    await a.close()
    await b.close()


def test_new_event_ids_are_time_ordered_uuid7() -> None:
    import uuid

    from eventstore import new_event_id

    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))
    # The 48-bit millisecond prefix never goes backwards.
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)
