"""Verification names the first position whose hash or order is wrong."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from eventstore import EventStore, verify
from eventstore.chain import encode_data, event_hash
from eventstore.writer import COLUMNS
from tests.support.events import ev


def tamper(db_path: Path, *statements: str) -> None:
    """Edit the log behind the store's back, the way an attacker with file access would."""
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("DROP TRIGGER events_refuse_update")
    raw.execute("DROP TRIGGER events_refuse_delete")
    for statement in statements:
        raw.execute(statement)
    raw.close()


async def filled(db_path: Path, n: int = 10) -> None:
    s = await EventStore.open(db_path)
    await s.append([ev(f"s{i % 3}", data={"i": i}) for i in range(n)])
    await s.close()


async def report_for(db_path: Path):  # type: ignore[no-untyped-def]
    s = await EventStore.open(db_path, readonly=True)
    try:
        return await verify(s)
    finally:
        await s.close()


async def test_intact_log_verifies(db_path: Path) -> None:
    await filled(db_path)
    report = await report_for(db_path)
    assert report.ok and report.checked == 10 and report.first_bad_position is None


async def test_edited_data_is_caught_at_its_position(db_path: Path) -> None:
    await filled(db_path)
    tamper(db_path, """UPDATE events SET data = '{"i":999}' WHERE position = 6""")
    report = await report_for(db_path)
    assert not report.ok
    assert report.first_bad_position == 6 and report.checked == 5
    assert "hash" in (report.problem or "")


async def test_edited_metadata_is_caught(db_path: Path) -> None:
    await filled(db_path)
    tamper(db_path, "UPDATE events SET tenant = 'globex' WHERE position = 3")
    assert (await report_for(db_path)).first_bad_position == 3


async def test_deleted_event_is_caught(db_path: Path) -> None:
    await filled(db_path)
    tamper(db_path, "DELETE FROM events WHERE position = 4")
    report = await report_for(db_path)
    assert report.first_bad_position == 5
    assert "missing" in (report.problem or "")


async def test_rehashed_edit_still_breaks_the_next_link(db_path: Path) -> None:
    """Recomputing an edited row's own hash does not help: the next row's hash covers it."""
    await filled(db_path)
    raw = sqlite3.connect(db_path)
    prev_hash = raw.execute("SELECT hash FROM events WHERE position = 6").fetchone()[0]
    row = list(raw.execute(f"SELECT {COLUMNS} FROM events WHERE position = 7").fetchone())
    raw.close()
    row[13] = encode_data({"i": 999})
    forged = event_hash(prev_hash, tuple(row[:14]))
    tamper(db_path, f"UPDATE events SET data = '{row[13]}', hash = '{forged}' WHERE position = 7")
    report = await report_for(db_path)
    assert report.first_bad_position == 8
    assert report.checked == 7
