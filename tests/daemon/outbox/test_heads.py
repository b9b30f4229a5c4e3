"""The outbox keeps each lane's head as sync folds, instead of walking every pending
command at every wake: the kept heads must be exactly what a walk finds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.outbox.worker import Outbox
from projections import kinds
from tests.support.history import Log, cw_seen, outcome, soc_seen


def walked(box: Outbox) -> dict[str, dict[str, Any]]:
    box._heads = None  # computed afresh from the whole outbox
    return dict(box._lane_heads())


async def test_lane_heads_kept_while_commands_pile_up_match_a_full_walk(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "events.db")
    try:
        await log.linked()
        engine = log.live.engine
        assert engine is not None
        box = Outbox(log.store, engine, {})
        assert dict(box._lane_heads()) == walked(box)
        kept = box._lane_heads()
        # A second ticket, and changes on both sides while nothing is delivered.
        await log.add(cw_seen(2, "2026-11-29T10:00:30Z"))
        for n, priority in enumerate(["low", "high", "urgent", "low"]):
            await log.add(soc_seen(11, f"2026-11-29T10:0{n + 1}:00Z", priority=priority))
        assert box._lane_heads() is kept  # updated as sync folded, not walked again
        assert len(log.outbox) > len(kept) >= 2  # several commands wait in one lane
        assert dict(kept) == walked(box)

        # An outcome ends a head: the next look walks again and finds the lane's next one.
        head = next(c for c in log.outbox if c.kind == "cw.update_ticket")
        await log.add(outcome(head, kinds.COMMAND_DELIVERED, result={}, attempt=1))
        after = dict(box._lane_heads())
        assert head.command_id not in {c.command_id for c in after.values()}
        assert after == walked(box)
    finally:
        await log.close()


async def test_a_command_out_of_the_outbox_is_forgotten_by_the_worker(tmp_path: Path) -> None:
    # What the worker keeps per command (tried, when to retry) goes with its last outcome;
    # kept, it grew by every command the daemon ever delivered.
    log = await Log.open(tmp_path / "events.db")
    try:
        await log.linked()
        engine = log.live.engine
        assert engine is not None
        box = Outbox(log.store, engine, {})
        await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="low"))
        command = next(c for c in log.outbox if c.kind == "cw.update_ticket")
        box._tried.add(command.command_id)
        box._retry_at[command.command_id] = 0.0
        await log.add(outcome(command, kinds.COMMAND_DELIVERED, result={}, attempt=1))
        assert command.command_id not in box._tried
        assert command.command_id not in box._retry_at
    finally:
        await log.close()
