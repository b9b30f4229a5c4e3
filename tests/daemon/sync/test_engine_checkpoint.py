"""The sync engine saves its checkpoint once the log is quiet, not while events keep coming."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from daemon.sync.engine import SyncEngine
from eventstore import EventStore, NewEvent
from projections.persist import ProjectionStore
from tests.support.rules import RULES

IDLE_S = 0.5


async def test_the_checkpoint_waits_for_a_quiet_log_then_is_saved(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "events.db", synchronous="NORMAL")
    engine = SyncEngine(store, RULES, checkpoint_every=10_000, checkpoint_idle_s=IDLE_S)
    await engine.load()
    saves: list[int] = []
    save = engine.projections.save

    async def counted(state, when=None):  # type: ignore[no-untyped-def]
        saves.append(state.position)
        return await save(state, when)

    engine.projections.save = counted  # type: ignore[method-assign]
    task = asyncio.create_task(engine.run())
    loop = asyncio.get_running_loop()
    try:
        # Events one after another for 6 * IDLE_S.
        appended = [loop.time()]
        while appended[-1] < appended[0] + 6 * IDLE_S:
            await store.append([NewEvent(stream="noise", type="test.noise", data={})])
            appended.append(loop.time())
        # Each save is a write transaction the appends queue behind: it used to come every
        # IDLE_S; now only where the log was quiet that long (a slow append on a loaded
        # machine), with one more for a gap the engine saw longer than the appender did.
        quiet_gaps = sum(b - a >= IDLE_S for a, b in itertools.pairwise(appended))
        assert len(saves) <= quiet_gaps + 1, (saves, quiet_gaps)
        # Quiet now: the checkpoint reaches the end of the log.
        last = await store.last_position()
        await asyncio.wait_for(_saved_at(store, last), 60)
        assert saves[-1] == last
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def _saved_at(store: EventStore, position: int) -> None:
    while (await ProjectionStore(store).load()).position < position:
        await asyncio.sleep(IDLE_S / 2)
