"""Deciding inputs in batches decides exactly what deciding them one by one does.

Under a burst, sync decides every waiting input in one go and appends all their
decisions in one commit, folding each input's decisions before the next is
decided (``SyncEngine._decide_batch``). The same log, decided one input at a
time (``max_batch=1``: each input's decisions appended on their own and folded
as they come round) and in batches, must end as the very same events: same ids,
types, data, causes and positions.

Each round's inputs land in one append, so both engines find them all in the log
at once: what they decide then depends only on how they batch, not on timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.sync.engine import MAX_BATCH
from eventstore import NewEvent, derived_event_id
from projections import kinds
from tests.support.history import PRIORITIES, STATUSES, Log, cw_seen, outcome, soc_seen

#: One input: a side seen with a status or priority at one of a few seconds (so that
#: observations of one second disagree and sync asks for reads), on the linked ticket or
#: a second one that routing links; or a delivery of a pending command.
inputs = st.one_of(
    st.tuples(st.sampled_from(["cw", "soc"]), st.sampled_from(["status", "priority"]),
              st.integers(0, 3), st.booleans(), st.integers(0, 2), st.sampled_from([1, 2])),
    st.tuples(st.just("deliver"), st.none(), st.integers(0, 7), st.none(), st.none(), st.none()),
)  # fmt: skip
rounds = st.lists(st.lists(inputs, min_size=1, max_size=12), min_size=1, max_size=4)


def _fixed(event: NewEvent, *key: object) -> NewEvent:
    """The event with an id both runs give it (decision ids derive from their cause's)."""
    return dataclasses.replace(event, event_id=derived_event_id("test", *map(str, key)))


def _input(log: Log, n: int, op: tuple[Any, ...], at_minute: int) -> NewEvent | None:
    kind, name, pick, own, second, ident = op
    at = f"2026-11-29T11:{at_minute:02d}:{second or 0:02d}Z"
    if kind == "deliver":
        if not log.outbox:
            return None
        command = log.outbox[pick % len(log.outbox)]
        result: dict[str, Any] = {"updated_at": at}
        if command.kind.endswith("create_ticket"):
            result["id"] = 100 + pick
        return outcome(command, kinds.COMMAND_DELIVERED, attempt=1, result=result)
    if kind == "cw":
        status = STATUSES["cw"][pick % 3] if name == "status" else "In Progress"
        priority = PRIORITIES[pick] if name == "priority" else "normal"
        return _fixed(cw_seen(ident, at, status=status, priority=priority, own_write=own), n)
    status = STATUSES["soc"][pick % 3] if name == "status" else "open"
    priority = PRIORITIES[pick] if name == "priority" else "normal"
    return _fixed(soc_seen(10 + ident, at, status=status, priority=priority), n)


async def _decided(path: Path, plan: list[list[tuple[Any, ...]]], max_batch: int) -> list[Any]:
    log = await Log.open(path, max_batch=max_batch)
    try:
        await log.add(_fixed(cw_seen(1, "2026-11-29T10:00:00Z"), "setup"))
        await log.deliver("soc.create_ticket", {"id": 11})
        for minute, ops in enumerate(plan, start=1):
            events: dict[str, NewEvent] = {}
            for n, op in enumerate(ops):
                event = _input(log, minute * 100 + n, op, minute)
                if event is not None:
                    events.setdefault(event.event_id, event)  # a command delivered once
            if events:
                await log.store.append(list(events.values()))
            await log.live.settle()
        return [
            (e.position, e.event_id, e.type, e.stream, e.causation_id, e.data)
            for e in await log.events()
        ]
    finally:
        await log.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds)
def test_batches_decide_what_one_by_one_decides(plan: list[list[tuple[Any, ...]]]) -> None:
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        single = asyncio.run(_decided(Path(one) / "events.db", plan, 1))
        batched = asyncio.run(_decided(Path(many) / "events.db", plan, MAX_BATCH))
    assert batched == single
