"""Anchors: the chain's head written outside the SQLite file, so a rehashed log is caught.

The hash chain shows an edited row only to someone who does not recompute every
later hash. Whoever can write the file can do that too. An anchor records a
position and its hash in a second place the log's writer only ever appends to:
a log edited and rehashed after an anchor was written no longer has that hash
at that position, and a log cut short no longer reaches it.

The anchors file is one JSON object per line, ``{"position", "hash", "at",
"reason"}``, appended with ``O_APPEND``, fsynced, mode 0600. A last line cut
short by a crash is ignored; any other unreadable line is reported. Ship the
lines off the host as well (the daemon also logs each one as
``store.anchored``): an attacker who can rewrite both the log and the anchors
beside it cannot rewrite what a remote log store already holds.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eventstore.errors import StoreError
from eventstore.writer import recorded_stamp


class AnchorFileError(StoreError):
    """The anchors file cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """The log's head at one moment: its position and that event's hash."""

    position: int
    hash: str
    at: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "hash": self.hash, "at": self.at, "reason": self.reason}


def anchors_path(db: Path) -> Path:
    """The default anchors file of a log: beside it, ``events.db.anchors``."""
    return db.with_name(db.name + ".anchors")


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor in ``path`` (none when the file does not exist), in file order."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AnchorFileError(f"cannot read the anchors file {path}: {exc.strerror}") from exc
    lines = raw.split(b"\n")
    complete, last = lines[:-1], lines[-1]  # ``last`` is b"" unless a write was cut short
    anchors = []
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
            anchors.append(Anchor(int(d["position"]), str(d["hash"]), str(d["at"]),
                                  str(d.get("reason", ""))))  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise AnchorFileError(
                f"the anchors file {path} has an unreadable line {n}; it was edited "
                "by hand, or is not an anchors file"
            ) from exc
    del last
    return anchors


def write_anchor(path: Path, anchor: Anchor) -> None:
    """Append ``anchor`` to ``path`` and fsync it (creating the file 0600 if needed)."""
    line = orjson.dumps(anchor.to_json()) + b"\n"
    try:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the new file's name survives a power cut too
            finally:
                os.close(folder)
    except OSError as exc:
        raise AnchorFileError(f"cannot write the anchors file {path}: {exc.strerror}") from exc


def head(conn: sqlite3.Connection, reason: str) -> Anchor | None:
    """The anchor for the log's current head (None for an empty log)."""
    row = conn.execute(
        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return Anchor(int(row[0]), str(row[1]), recorded_stamp(), reason)


def last(anchors: Sequence[Anchor]) -> Anchor | None:
    """The anchor with the highest position (the one a start verifies from)."""
    return max(anchors, key=lambda a: a.position, default=None)
