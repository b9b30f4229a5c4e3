"""Walking the hash chain: find the first event whose hash or order is wrong.

Verification recomputes every hash from the stored columns and checks that
positions are dense from 1 and each stream's versions run 1, 2, 3, ... A row
edited behind the store's back (say with the append-only triggers dropped)
breaks its own hash; a deleted or reordered row breaks the order or the next
hash. The walk streams rows and keeps only each stream's last version, so it
runs in bounded memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventstore.chain import GENESIS_HASH, event_hash
from eventstore.store import EventStore
from eventstore.writer import COLUMNS


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` found: ``ok``, or the first bad position and why."""

    ok: bool
    checked: int
    last_position: int
    first_bad_position: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "last_position": self.last_position,
            "first_bad_position": self.first_bad_position,
            "problem": self.problem,
        }


class ChainWalker:
    """Checks rows one by one in position order; reusable for imports."""

    def __init__(
        self,
        prev_position: int = 0,
        prev_hash: str = GENESIS_HASH,
        stream_versions: dict[str, int] | None = None,
    ) -> None:
        self.prev_position = prev_position
        self.prev_hash = prev_hash
        self.stream_versions: dict[str, int] = stream_versions if stream_versions else {}
        self.checked = 0

    def check(self, row: tuple[Any, ...]) -> str | None:
        """Check one row (``COLUMNS`` order); return the problem, or None when it is sound."""
        position, stream, version, stored_hash = row[0], row[2], row[3], row[14]
        if position != self.prev_position + 1:
            return (
                f"position {position} follows {self.prev_position}: "
                f"expected {self.prev_position + 1} (an event is missing or out of order)"
            )
        want_version = self.stream_versions.get(stream, 0) + 1
        if version != want_version:
            return (
                f"stream {stream!r} has version {version} where {want_version} was expected "
                "(a stream event is missing or out of order)"
            )
        computed = event_hash(self.prev_hash, tuple(row[:14]))
        if computed != stored_hash:
            return (
                "hash mismatch: the stored hash does not match the event's content and the "
                "previous hash (the row was altered, or an earlier row was)"
            )
        self.prev_position = position
        self.prev_hash = stored_hash
        self.stream_versions[stream] = version
        self.checked += 1
        return None


def walk(rows: Iterable[tuple[Any, ...]]) -> VerifyReport:
    walker = ChainWalker()
    for row in rows:
        problem = walker.check(row)
        if problem is not None:
            return VerifyReport(False, walker.checked, walker.prev_position, row[0], problem)
    return VerifyReport(True, walker.checked, walker.prev_position)


def verify_connection(conn: sqlite3.Connection) -> VerifyReport:
    """Walk the chain through an open connection (thread of the caller's choosing)."""
    cursor = conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY position")
    cursor.arraysize = 1000
    return walk(cursor)


async def verify(store: EventStore) -> VerifyReport:
    """Walk the whole chain of ``store`` and report the first wrong position, if any."""
    return await store.read_connection_call(verify_connection)
