"""Saved projection rows: read back as they were, or, when this version cannot read them,
never misread: the state is rebuilt from the log and the rows replaced."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
from structlog.testing import capture_logs

from eventstore import EventStore
from projections.fold import fold
from projections.persist import ProjectionStore
from tests.support.history import Log, soc_seen


async def _saved_log(path: Path) -> None:
    log = await Log.open(path)
    await log.conflict()
    await log.add(soc_seen(11, "2026-11-29T10:05:00Z", priority="high"))
    await log.close()  # the engine saves its checkpoint on the way out


async def test_saved_rows_are_read_back_as_the_fold_of_the_log(tmp_path: Path) -> None:
    await _saved_log(tmp_path / "e.db")
    store = await EventStore.open(tmp_path / "e.db")
    try:
        loaded = await ProjectionStore(store).load()
        folded = fold([e async for e in store.read() if e.position <= loaded.position])
    finally:
        await store.close()
    assert loaded.position > 0 and loaded.to_json() == folded.to_json()


async def test_rows_of_another_shape_are_rebuilt_from_the_log_not_misread(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    await _saved_log(db)
    conn = sqlite3.connect(db)
    with conn:
        [(link_id, body)] = conn.execute("SELECT link_id, body FROM projection_links").fetchall()
        row = orjson.loads(body)
        row["state"] = "archived"  # a state this version does not know
        conn.execute(
            "UPDATE projection_links SET body = ? WHERE link_id = ?",
            (orjson.dumps(row).decode(), link_id),
        )
    conn.close()
    store = await EventStore.open(db)
    try:
        projections = ProjectionStore(store)
        with capture_logs() as logs:
            state = await projections.load()
        assert (state.position, state.links) == (0, {})  # folded again from position 1
        assert [e["event"] for e in logs] == ["projection.rebuilt_from_log"]
        assert "archived" in logs[0]["reason"]
        events = [e async for e in store.read()]
        fold(events, state)  # what the engine does from there
        assert state.to_json() == fold(events).to_json()
        # The next save replaces the row this version could not read.
        assert await projections.save(state) > 0
        assert (await ProjectionStore(store).load()).to_json() == state.to_json()
    finally:
        await store.close()
