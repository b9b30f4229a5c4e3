"""Schema migrations: an older log opens, migrates in place and reads the same."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eventstore import EventStore
from eventstore.schema import MIGRATIONS, SCHEMA_VERSION, _split
from eventstore.verify import verify
from tests.support.events import ev


def _v1_copy_of(source: Path, target: Path) -> None:
    """A version-1 log (per-event ticket index, no ticket map) holding ``source``'s events."""
    raw = sqlite3.connect(target, isolation_level=None)
    for statement in _split(MIGRATIONS[0]):
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("ATTACH DATABASE ? AS src", (str(source),))
    raw.execute("INSERT INTO events SELECT * FROM src.events ORDER BY position")
    raw.execute("DETACH DATABASE src")
    raw.close()


def _objects(path: Path) -> set[str]:
    raw = sqlite3.connect(path)
    try:
        return {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
    finally:
        raw.close()


async def test_a_version_1_log_migrates_to_the_ticket_map_and_reads_the_same(
    tmp_path: Path,
) -> None:
    source = tmp_path / "new.db"
    async with await EventStore.open(source) as store:
        await store.append([ev("cw:ticket:1", tenant="acme", ticket="cw:1", data={"v": 1})])
        await store.append([ev("link:1", type="sync.tickets.linked", tenant="acme", ticket="cw:1")])
        await store.append([ev("soc:ticket:9", tenant="acme", ticket="soc:9")])
        await store.append([ev("cw:ticket:1", tenant=None, ticket="cw:1")])
        await store.append([ev("admin", type="admin.note")])
        expected_acme = await store.read_ticket("acme", "cw:1")
        expected_none = await store.read_ticket(None, "cw:1")
    old = tmp_path / "old.db"
    _v1_copy_of(source, old)
    assert "events_by_ticket" in _objects(old) and "ticket_streams" not in _objects(old)

    async with await EventStore.open(old) as store:
        assert [e.position for e in expected_acme] == [1, 2]
        assert await store.read_ticket("acme", "cw:1") == expected_acme
        assert await store.read_ticket(None, "cw:1") == expected_none
        assert await store.read_ticket("acme", "soc:9") != []
        assert (await verify(store)).ok
        # New appends keep the map: the ticket's new stream is found.
        [later] = await store.append([ev("outbox:1", tenant="acme", ticket="cw:1")])
        assert (await store.read_ticket("acme", "cw:1"))[-1] == later

    objects = _objects(old)
    assert "events_by_ticket" not in objects and "ticket_streams" in objects
    raw = sqlite3.connect(old)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(raw.execute("SELECT tenant, ticket, stream FROM ticket_streams")) == [
        ("", "cw:1", "cw:ticket:1"),
        ("acme", "cw:1", "cw:ticket:1"),
        ("acme", "cw:1", "link:1"),
        ("acme", "cw:1", "outbox:1"),
        ("acme", "soc:9", "soc:ticket:9"),
    ]
    raw.close()


async def test_the_ticket_map_refuses_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with await EventStore.open(path) as store:
        await store.append([ev("cw:ticket:1", tenant="acme", ticket="cw:1")])
    raw = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM ticket_streams")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE ticket_streams SET stream = 'x'")
    assert raw.execute("SELECT COUNT(*) FROM ticket_streams").fetchone()[0] == 1
    raw.close()


async def test_an_event_without_a_ticket_adds_nothing_to_the_map(tmp_path: Path) -> None:
    async with await EventStore.open(tmp_path / "events.db") as store:
        await store.append([ev("admin", type="admin.note", tenant="acme")])
        assert await store.read_ticket("acme", "admin") == []
    raw = sqlite3.connect(tmp_path / "events.db")
    assert raw.execute("SELECT COUNT(*) FROM ticket_streams").fetchone()[0] == 0
    raw.close()
