"""The demo's log, recorded and printed by an earlier socbridge: today's code reads its saved
projection back as it was, decides it alike, and prints the same bytes for it.

``tests/fixtures/demo/`` holds the log (NDJSON), the projection rows its daemon saved at its
checkpoint, and what ``replay``, ``events`` and ``audit`` printed for it then
(``generate.py`` says how they were made).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from daemon.cli.main import main
from daemon.service.config import load_config
from daemon.sync.decide import decide
from daemon.sync.rules import rules_from_config
from eventstore import EventStore, RecordedEvent, import_ndjson
from projections.persist import ProjectionStore
from projections.replay import preview, projection_rows
from tests.support.legacy import fold as legacy_fold
from tests.support.legacy.compare import same_as_legacy
from tests.support.paths import REPO

DEMO = REPO / "tests" / "fixtures" / "demo"
ROWS = orjson.loads((DEMO / "rows.json").read_bytes())
TABLES = ("projection_links", "projection_outbox", "projection_meta")
#: The projection tables as the earlier socbridge created them.
SCHEMA = {
    "projection_checkpoints": "name TEXT PRIMARY KEY, position INTEGER NOT NULL",
    "projection_links": "link_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, state TEXT NOT NULL, "
    "body TEXT NOT NULL",
    "projection_outbox": "command_id TEXT PRIMARY KEY, link_id TEXT NOT NULL, body TEXT NOT NULL",
    "projection_meta": "key TEXT PRIMARY KEY, body TEXT NOT NULL",
}


async def _events(db: Path) -> list[RecordedEvent]:
    store = await EventStore.open(db)
    try:
        return [e async for e in store.read()]
    finally:
        await store.close()


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A config whose log is the demo's, with the projection rows its daemon saved."""
    db = tmp_path / "events.db"

    async def restore() -> None:
        store = await EventStore.open(db)
        try:
            with (DEMO / "events.ndjson").open("rb") as lines:
                await import_ndjson(store, lines)
        finally:
            await store.close()

    asyncio.run(restore())
    conn = sqlite3.connect(db)
    with conn:
        for table, columns in SCHEMA.items():
            conn.execute(f"CREATE TABLE {table} ({columns})")
        conn.execute(
            "INSERT INTO projection_checkpoints VALUES ('bridge', ?)", (ROWS["checkpoint"],)
        )
        for table in TABLES:
            for row in ROWS[table]:
                conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    conn.close()
    config = tmp_path / "socbridge.toml"
    config.write_text((DEMO / "socbridge.toml").read_text().replace("@DB@", str(db)))
    return config


@pytest.mark.parametrize(
    ("golden", "argv"),
    [
        ("replay.txt", ["replay", "--dry-run"]),
        ("replay.json", ["replay", "--dry-run", "--json"]),
        ("replay-policy.json", ["replay", "--policy", "priority=cw", "--json"]),
        ("events.txt", ["events"]),
        ("events.json", ["events", "--json"]),
        ("audit.txt", ["audit"]),
        ("audit.json", ["audit", "--json"]),
    ],
)
def test_the_demo_log_prints_the_same_bytes_as_before(
    demo: Path, golden: str, argv: list[str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    main([*argv, "--config", str(demo)])
    assert capsysbinary.readouterr().out == (DEMO / golden).read_bytes()


def test_replay_writes_the_rows_the_daemon_saved_byte_for_byte(
    demo: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["replay", "--config", str(demo)]) == 0
    conn = sqlite3.connect(load_config(demo).store.path)
    for table in TABLES:
        held = [list(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]
        assert held == ROWS[table], table
    conn.close()


def test_a_checkpoint_saved_before_is_read_back_as_it_was(demo: Path) -> None:
    async def load() -> tuple[object, list[RecordedEvent]]:
        store = await EventStore.open(load_config(demo).store.path)
        try:
            return await ProjectionStore(store).load(), [e async for e in store.read()]
        finally:
            await store.close()

    state, events = asyncio.run(load())
    rows = projection_rows(state)  # type: ignore[arg-type]
    for table in TABLES:
        assert sorted(list(r) for r in rows[table].values()) == ROWS[table], table
    folded = legacy_fold.fold(e for e in events if e.position <= ROWS["checkpoint"])
    assert state.to_json() == folded.to_json()  # type: ignore[attr-defined]


def test_the_demo_log_is_folded_and_decided_as_the_dict_model_did(demo: Path) -> None:
    rules = rules_from_config(load_config(demo))
    events = asyncio.run(_events(load_config(demo).store.path))
    assert same_as_legacy(events, rules) > 10
    assert preview(events, lambda state, event: decide(state, event, rules)).diffs == []
