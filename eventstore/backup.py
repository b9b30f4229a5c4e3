"""An online, consistent copy of the log, verified before it is called a backup.

SQLite's backup API copies the database page by page. Copied in one step it
holds one read transaction for the whole copy, so the copy is the log as it
stood at one commit, however many appends land meanwhile (WAL lets the writer
go on). The copy is written beside its destination under a temporary name,
fsynced, verified (the whole chain, and the anchors that cover it), and only
then renamed into place with its anchors file beside it: a destination that
exists is always a complete, verified backup.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from eventstore.anchors import Anchor, anchors_path, head, read_anchors, write_anchor
from eventstore.errors import StoreError
from eventstore.store import EventStore
from eventstore.verify import VerifyReport, verify


class BackupError(StoreError):
    """The backup could not be written, or the copy did not verify."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    dest: Path
    anchors: Path
    head: Anchor | None
    verified: VerifyReport
    bytes: int


async def backup(store: EventStore, dest: Path, live_anchors: Path | None) -> BackupReport:
    """Copy ``store`` to ``dest`` (which must not exist), verify it, anchor it."""
    if dest.exists():
        raise BackupError(f"{dest} exists; a backup never overwrites: choose a new file name")
    if not dest.parent.is_dir():
        raise BackupError(f"folder {dest.parent} does not exist; create it first")
    partial = dest.with_name(f".{dest.name}.partial")

    def copy(conn: sqlite3.Connection) -> Anchor | None:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()  # left by a backup that was interrupted
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        target = sqlite3.connect(partial)
        try:
            conn.backup(target)  # all pages in one step: one snapshot of the log
            # A single file: the backup holds no -wal beside it.
            target.execute("PRAGMA journal_mode=DELETE")
            found = head(target, "backup")
        finally:
            target.close()
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return found

    try:
        copied_head = await store.read_connection_call(copy)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise BackupError(f"cannot write the backup {dest}: {exc}") from exc

    covered = [
        a
        for a in (read_anchors(live_anchors) if live_anchors is not None else [])
        if copied_head is not None and a.position <= copied_head.position
    ]
    copy_store = await EventStore.open(partial, readonly=True)
    try:
        report = await verify(copy_store, covered)
    finally:
        await copy_store.close()
    if not report.ok:
        partial.unlink()
        raise BackupError(
            f"the copy fails its check at position {report.first_bad_position}: "
            f"{report.problem}; the live log has the same problem (socbridge verify)"
        )
    dest_anchors = anchors_path(dest)
    with contextlib.suppress(FileNotFoundError):
        dest_anchors.unlink()
    for anchor in [*covered, *([copied_head] if copied_head is not None else [])]:
        write_anchor(dest_anchors, anchor)
    os.replace(partial, dest)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    if live_anchors is not None and copied_head is not None:
        # The live log is anchored at the backup's head too: the two agree there.
        with contextlib.suppress(StoreError):
            write_anchor(live_anchors, copied_head)
    return BackupReport(dest, dest_anchors, copied_head, report, dest.stat().st_size)
