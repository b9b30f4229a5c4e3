"""append_at_end: what the caller decides on the log's end lands right after it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from eventstore import EventStore, LogMovedError, NewEvent, RecordedEvent
from tests.support.events import ev


async def test_appends_queued_during_the_decision_land_after_it(store: EventStore) -> None:
    await store.append([ev(data={"n": 0})])
    others: list[asyncio.Task[list[RecordedEvent]]] = []

    async def decide(end: int) -> Sequence[NewEvent]:
        # Appends made while the caller decides wait for its events.
        others.extend(asyncio.create_task(store.append([ev(data={"other": i})])) for i in range(3))
        await asyncio.sleep(0)  # they reach the writer's queue
        assert end == 1
        return [ev(data={"decided": 1}), ev(data={"decided": 2})]

    mine = await store.append_at_end(decide)
    assert [e.position for e in mine] == [2, 3]
    landed = [e.position for batch in await asyncio.gather(*others) for e in batch]
    assert sorted(landed) == [4, 5, 6]


async def test_nothing_decided_lets_the_other_appends_go_on(store: EventStore) -> None:
    async def nothing(end: int) -> Sequence[NewEvent]:
        return []

    assert await store.append_at_end(nothing) == []
    assert [e.position for e in await store.append([ev()])] == [1]


async def test_a_decision_that_fails_lets_the_other_appends_go_on(store: EventStore) -> None:
    async def broken(end: int) -> Sequence[NewEvent]:
        raise RuntimeError("no decision")

    with pytest.raises(RuntimeError, match="no decision"):
        await store.append_at_end(broken)
    assert [e.position for e in await asyncio.wait_for(store.append([ev()]), 5)] == [1]


async def test_a_decision_slower_than_the_hold_is_refused_if_the_log_moved(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("eventstore.store.HOLD_TIMEOUT_S", 0.05)

    async def slow(end: int) -> Sequence[NewEvent]:
        # This append can only be written once the writer stopped holding.
        await asyncio.wait_for(store.append([ev(data={"meanwhile": 1})]), 5)
        return [ev(data={"late": 1})]

    with pytest.raises(LogMovedError):
        await store.append_at_end(slow)
    assert [e.data for e in [x async for x in store.read()]] == [{"meanwhile": 1}]
