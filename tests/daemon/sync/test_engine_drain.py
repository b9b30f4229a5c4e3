"""``SyncEngine.drain``: the daemon's stop waits for sync to decide what the log holds, so
the checkpoint saved on the way out is at the log's end, not before the last cause."""

from __future__ import annotations

from pathlib import Path

from projections import kinds
from tests.support.history import Log, soc_seen


async def test_drain_returns_once_the_last_input_is_decided_and_its_decisions_folded(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "events.db")
    try:
        await log.linked()
        engine = log.live.engine
        assert engine is not None
        # Appended, not awaited: the engine has neither folded nor decided it yet.
        [cause] = await log.store.append([soc_seen(11, "2026-11-29T10:01:00Z", priority="low")])
        await engine.drain()
        last = await log.store.last_position()
        assert engine.quiescent and engine.state.position == last > cause.position
        decided = [e for e in await log.events() if e.causation_id == cause.event_id]
        assert kinds.COMMAND_ISSUED in {e.type for e in decided}
        assert max(e.position for e in decided) == last  # its decisions are what was folded
        # Nothing left to wait for: a second drain returns at once.
        await engine.drain()
    finally:
        await log.close()
