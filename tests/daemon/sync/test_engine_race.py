"""The engine decides an input on exactly the log before its decisions.

Intake, the outbox and sync append to one log concurrently. When something
lands between the engine folding an input and appending its decisions, the
decisions must not be appended after an event they did not see: the engine
folds it and decides again. (Decided before a delivery and folded after it, an
echo once put a ConnectWise priority socbridge had overwritten back into the
state, and the link stayed apart after a SIGKILL test.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.sync.engine import MAX_BATCH
from eventstore import NewEvent
from projections import kinds
from projections.replay import preview
from tests.support.history import Log, deciding, outcome, soc_seen


@pytest.mark.parametrize("max_batch", [1, MAX_BATCH])
async def test_an_input_landing_with_a_delivery_is_decided_after_it(
    tmp_path: Path, max_batch: int
) -> None:
    log = await Log.open(tmp_path / "events.db", max_batch=max_batch)
    try:
        await log.linked()
        await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="low"))
        first = log.command("cw.update_ticket")
        # The SOC changes again as the first write's delivery is recorded: both land
        # before the engine has folded either.
        await log.store.append([
            soc_seen(11, "2026-11-29T10:02:00Z", priority="high"),
            outcome(first, kinds.COMMAND_DELIVERED, attempt=1,
                    result={"updated_at": "2026-11-29T10:01:30Z"}),
        ])  # fmt: skip
        await log.live.settle()
        assert log.live.engine is not None
        raced = log.live.engine.raced
        events = await log.events()
    finally:
        await log.close()
    [second] = [c for c in events if c.type == kinds.COMMAND_ISSUED
                and c.data["params"].get("fields") == {"priority": "high"}]  # fmt: skip
    # Decided with the delivery folded: ConnectWise holds low now, not normal any more.
    assert second.data["params"]["accept"] == {"priority": ["low", "high"]}
    # One at a time, the conditional append found the log moved on and decided again; a
    # batch is decided at the log's end, after folding what landed first.
    assert raced == (1 if max_batch == 1 else 0)
    # And a replay judges it on the same state.
    assert preview(events, deciding()).diffs == []


async def test_an_input_is_decided_while_appends_keep_landing(tmp_path: Path) -> None:
    """Under a steady stream of appends (a callback storm), an input's decisions still go
    in at once: the log moving on before every conditional append must not leave it
    waiting until the stream stops."""
    log = await Log.open(tmp_path / "events.db")
    engine = log.live.engine
    assert engine is not None
    decided = asyncio.Event()
    engine.on_event(
        lambda e: (
            decided.set()
            if e.type == kinds.COMMAND_ISSUED
            and e.data["params"].get("fields") == {"priority": "high"}
            else None
        )
    )
    flooding = True
    landed = 0
    under_way = asyncio.Event()

    async def flood(w: int) -> None:
        nonlocal landed
        for n in range(300):  # bounded, so a stuck engine fails the test instead of hanging
            await log.store.append([NewEvent(f"test:noise:{w}", "test.noise", {"n": n})])
            landed += 1
            if landed == 200:
                under_way.set()
        if landed == 16 * 300:
            nonlocal flooding
            flooding = False

    try:
        await log.linked()
        storm = [asyncio.create_task(flood(w)) for w in range(16)]
        await asyncio.wait_for(under_way.wait(), 30)
        await log.store.append([soc_seen(11, "2026-11-29T10:01:00Z", priority="high")])
        await asyncio.wait_for(decided.wait(), 30)
        assert flooding, "decided only once the stream of appends had stopped"
        await asyncio.gather(*storm)
        await log.live.settle()
        events = await log.events()
    finally:
        await log.close()
    assert preview(events, deciding()).diffs == []
