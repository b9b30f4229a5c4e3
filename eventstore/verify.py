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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eventstore.anchors import Anchor
from eventstore.chain import GENESIS_HASH, event_hash
from eventstore.progress import PROGRESS_EVERY, OnProgress
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
    #: Anchors (see :mod:`eventstore.anchors`) the log was checked against.
    anchors_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "checked": self.checked,
            "last_position": self.last_position,
            "first_bad_position": self.first_bad_position,
            "problem": self.problem,
        }
        if self.anchors_checked:
            out["anchors_checked"] = self.anchors_checked
        return out


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
        self.stream_versions: dict[str, int] = {} if stream_versions is None else stream_versions
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


def walk(
    walker: ChainWalker,
    cursor: sqlite3.Cursor,
    on_progress: OnProgress | None = None,
    total: int | None = None,
) -> VerifyReport:
    """Check the rows ``cursor`` yields, a batch of :data:`PROGRESS_EVERY` at a time (the
    progress callback is called after each batch, with the events checked)."""
    while rows := cursor.fetchmany(PROGRESS_EVERY):
        for row in rows:
            problem = walker.check(row)
            if problem is not None:
                return VerifyReport(False, walker.checked, walker.prev_position, row[0], problem)
        if on_progress is not None:
            on_progress(walker.checked, total)
    return VerifyReport(True, walker.checked, walker.prev_position)


def verify_connection(
    conn: sqlite3.Connection, on_progress: OnProgress | None = None
) -> VerifyReport:
    """Walk the chain through an open connection (thread of the caller's choosing)."""
    total = None
    if on_progress is not None:
        total = conn.execute("SELECT MAX(position) FROM events").fetchone()[0]
    cursor = conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY position")
    return walk(ChainWalker(), cursor, on_progress, total)


async def verify(
    store: EventStore, anchors: Sequence[Anchor] = (), on_progress: OnProgress | None = None
) -> VerifyReport:
    """Walk the whole chain of ``store``, then check it against ``anchors``; report the
    first wrong position, if any. ``on_progress`` is told the events checked (it is
    called from the store's reader thread)."""

    def run(conn: sqlite3.Connection) -> VerifyReport:
        report = verify_connection(conn, on_progress)
        if not report.ok or not anchors:
            return report
        bad = check_anchors(conn, anchors)
        if bad is not None:
            return replace(bad, checked=report.checked, anchors_checked=len(anchors))
        return replace(report, anchors_checked=len(anchors))

    return await store.read_connection_call(run)


async def verify_tail(store: EventStore, anchor: Anchor | None) -> VerifyReport:
    """:func:`verify_from` on ``store``: what a start checks (fast with an anchor)."""
    return await store.read_connection_call(lambda conn: verify_from(conn, anchor))


def check_anchors(conn: sqlite3.Connection, anchors: Iterable[Anchor]) -> VerifyReport | None:
    """The first anchor the log disagrees with, as a failed report (None: all agree).

    The log was changed somewhere between the last anchor that agrees and the first
    that does not; the report names that anchor's position and the span.
    """
    agreed = 0
    for anchor in sorted(anchors, key=lambda a: a.position):
        row = conn.execute("SELECT hash FROM events WHERE position = ?", (anchor.position,))
        found = row.fetchone()
        if found is None:
            last = conn.execute("SELECT MAX(position) FROM events").fetchone()[0] or 0
            problem = (
                f"the log ends at position {last}, but an anchor written at {anchor.at} "
                f"({anchor.reason}) records position {anchor.position}: events were removed"
            )
        elif found[0] != anchor.hash:
            problem = (
                f"position {anchor.position} does not have the hash the anchor written at "
                f"{anchor.at} ({anchor.reason}) records: the log was changed between "
                f"positions {agreed + 1} and {anchor.position} and its hashes recomputed"
            )
        else:
            agreed = anchor.position
            continue
        return VerifyReport(False, agreed, agreed, anchor.position, problem)
    return None


def verify_from(conn: sqlite3.Connection, anchor: Anchor | None) -> VerifyReport:
    """Check the chain from ``anchor`` (which must agree with the log) to the head.

    What lies before the anchor was checked when the anchor was written; the anchor's
    hash still being there means it was not rewritten since. Stream versions of the
    streams met after it are looked up once each, by index.
    """
    start, start_hash = (anchor.position, anchor.hash) if anchor else (0, GENESIS_HASH)
    if anchor is not None:
        bad = check_anchors(conn, [anchor])
        if bad is not None:
            return bad
    walker = ChainWalker(start, start_hash, _SeededVersions(conn, start))
    cursor = conn.execute(
        f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position", (start,)
    )
    return walk(walker, cursor)


class _SeededVersions(dict[str, int]):
    """Stream versions at ``position``, read from the log the first time a stream is met."""

    def __init__(self, conn: sqlite3.Connection, position: int) -> None:
        super().__init__()

        def lookup(stream: str) -> int:
            # Walks the (stream, stream_version) index down from the top: a few rows.
            row = conn.execute(
                "SELECT stream_version FROM events WHERE stream = ? AND position <= ? "
                "ORDER BY stream_version DESC LIMIT 1",
                (stream, position),
            ).fetchone()
            return int(row[0]) if row else 0

        self._lookup: Callable[[str], int] = lookup

    def __missing__(self, stream: str) -> int:
        version = self._lookup(stream)
        self[stream] = version
        return version

    def get(self, stream: str, default: Any = None) -> Any:
        return self[stream]
