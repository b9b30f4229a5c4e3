"""A database that cannot be used gets an error that says so, and what to do."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from eventstore import (
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DatabaseUnavailableError,
    EventStore,
    SchemaTooNewError,
    StoreClosedError,
)
from eventstore.schema import SCHEMA_VERSION
from tests.support.events import ev


async def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(DatabaseCorruptError, match="not a valid SQLite database"):
        await EventStore.open(path)
    assert path.read_bytes().startswith(b"this is not sqlite")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    s = await EventStore.open(path)
    await s.close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaTooNewError, match="upgrade socbridge"):
        await EventStore.open(path)
    with pytest.raises(SchemaTooNewError):
        await EventStore.open(path, readonly=True)


async def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailableError, match="folder exists"):
        await EventStore.open(tmp_path / "no" / "such" / "events.db")


async def test_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    s = await EventStore.open(path, busy_timeout_ms=200)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(DatabaseLockedError, match="locked by another process"):
        await s.append([ev()])
    holder.execute("ROLLBACK")
    holder.close()
    # The store recovers once the lock is gone.
    [rec] = await s.append([ev()])
    assert rec.position == 1
    await s.close()


async def test_write_through_read_only_connection_says_read_only(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    s = await EventStore.open(path)
    await s.close()
    ro = await EventStore.open(path, readonly=True)
    with pytest.raises(StoreClosedError, match="read-only"):
        await ro.append([ev()])
    with pytest.raises(DatabaseReadOnlyError, match="read-only for this user"):
        await ro.read_connection_call(
            lambda c: c.execute("INSERT INTO events (event_id) VALUES ('x')")
        )
    await ro.close()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
async def test_immutable_file_is_reported_read_only(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    s = await EventStore.open(path)
    await s.append([ev()])
    await s.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support the immutable attribute")
    try:
        with pytest.raises((DatabaseReadOnlyError, DatabaseUnavailableError)):
            s = await EventStore.open(path)
            try:
                await s.append([ev()])
            finally:
                await s.close()
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_closed_store_refuses_appends_and_reads(tmp_path: Path) -> None:
    s = await EventStore.open(tmp_path / "events.db")
    pending = [asyncio.create_task(s.append([ev(f"s{i}")])) for i in range(5)]
    await asyncio.sleep(0)
    await s.close()
    # Appends queued before close are finished, not dropped.
    assert sorted(t.result()[0].position for t in pending) == [1, 2, 3, 4, 5]
    with pytest.raises(StoreClosedError):
        await s.append([ev()])
    with pytest.raises(StoreClosedError):
        await s.last_position()
