"""Anchors catch what the chain alone cannot: a log edited with every later hash recomputed."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from eventstore import EventStore, verify
from eventstore.anchors import (
    Anchor,
    AnchorFileError,
    anchors_path,
    head,
    read_anchors,
    write_anchor,
)
from eventstore.backup import BackupError, backup
from eventstore.chain import encode_data, event_hash
from eventstore.verify import verify_tail
from eventstore.writer import COLUMNS
from tests.eventstore.test_verify import filled, tamper
from tests.support.events import ev


def rehash_from(db_path: Path, position: int, new_data: dict[str, object]) -> None:
    """Edit one event's data and recompute every hash from there: the chain verifies."""
    data = encode_data(new_data)
    tamper(db_path, f"UPDATE events SET data = '{data}' WHERE position = {position}")
    raw = sqlite3.connect(db_path, isolation_level=None)
    rows = raw.execute(f"SELECT {COLUMNS} FROM events ORDER BY position").fetchall()
    prev = rows[position - 2][14] if position > 1 else "0" * 64
    for row in rows[position - 1 :]:
        forged = event_hash(prev, tuple(row[:14]))
        raw.execute("UPDATE events SET hash = ? WHERE position = ?", (forged, row[0]))
        prev = forged
    raw.close()


async def anchor_head(db_path: Path, reason: str = "test") -> None:
    raw = sqlite3.connect(db_path)
    anchor = head(raw, reason)
    raw.close()
    assert anchor is not None
    write_anchor(anchors_path(db_path), anchor)


async def checked(db_path: Path, with_anchors: bool = True):  # type: ignore[no-untyped-def]
    store = await EventStore.open(db_path, readonly=True)
    try:
        anchors = read_anchors(anchors_path(db_path)) if with_anchors else []
        return await verify(store, anchors)
    finally:
        await store.close()


async def test_a_rehashed_edit_passes_the_chain_but_not_the_anchor(db_path: Path) -> None:
    await filled(db_path, 10)
    await anchor_head(db_path)
    rehash_from(db_path, 4, {"i": 999})
    assert (await checked(db_path, with_anchors=False)).ok  # the chain alone is fooled
    report = await checked(db_path)
    assert not report.ok and report.first_bad_position == 10
    assert "changed between positions 1 and 10" in (report.problem or "")


async def test_the_first_disagreeing_anchor_is_named_with_the_span(db_path: Path) -> None:
    await filled(db_path, 5)
    await anchor_head(db_path)
    store = await EventStore.open(db_path)
    await store.append([ev("s9", data={"i": n}) for n in range(5)])
    await store.close()
    await anchor_head(db_path)
    rehash_from(db_path, 8, {"i": -1})
    report = await checked(db_path)
    assert report.first_bad_position == 10 and report.anchors_checked == 2
    assert "between positions 6 and 10" in (report.problem or "")


async def test_a_log_cut_short_is_caught(db_path: Path) -> None:
    await filled(db_path, 10)
    await anchor_head(db_path)
    tamper(db_path, "DELETE FROM events WHERE position > 7")
    report = await checked(db_path)
    assert not report.ok and "ends at position 7" in (report.problem or "")


async def test_a_start_verifies_from_the_last_anchor_and_finds_a_later_edit(db_path: Path) -> None:
    await filled(db_path, 10)
    await anchor_head(db_path)
    store = await EventStore.open(db_path)
    await store.append([ev(f"s{n % 3}", data={"more": n}) for n in range(5)])
    await store.close()
    [anchor] = read_anchors(anchors_path(db_path))
    store = await EventStore.open(db_path, readonly=True)
    tail = await verify_tail(store, anchor)
    await store.close()
    assert tail.ok and tail.checked == 5  # only what came after the anchor
    tamper(db_path, "UPDATE events SET data = '{\"more\":7}' WHERE position = 13")
    store = await EventStore.open(db_path, readonly=True)
    tail = await verify_tail(store, anchor)
    await store.close()
    assert not tail.ok and tail.first_bad_position == 13


def test_the_file_is_private_append_only_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "events.db.anchors"
    write_anchor(path, Anchor(3, "a" * 64, "2026-12-06T10:00:00Z", "start"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "ab") as f:
        f.write(b'{"position": 9, "ha')  # a crash in the middle of a write
    assert [a.position for a in read_anchors(path)] == [3]
    path.write_bytes(b"not json\n" + path.read_bytes())
    with pytest.raises(AnchorFileError, match="unreadable line 1"):
        read_anchors(path)


async def test_backup_is_verified_and_carries_its_anchors(db_path: Path, tmp_path: Path) -> None:
    await filled(db_path, 10)
    await anchor_head(db_path)
    store = await EventStore.open(db_path)
    try:
        await store.append([ev("later", data={"n": 1})])
        dest = tmp_path / "copy.db"
        report = await backup(store, dest, anchors_path(db_path))
        with pytest.raises(BackupError, match="never overwrites"):
            await backup(store, dest, anchors_path(db_path))
    finally:
        await store.close()
    assert report.head is not None and report.head.position == 11
    assert report.verified.ok and report.verified.anchors_checked == 1
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert [a.position for a in read_anchors(anchors_path(dest))] == [10, 11]
    assert not Path(f"{dest}-wal").exists()  # a single file
    assert (await checked(dest)).ok
