"""The daemon's side of the log's anchors: check at start, write while running.

At start the chain is verified from the last anchor to the head (fast: the
events before the anchor were checked when it was written, and the anchor's
hash still being at its position shows they were not rewritten since). A log
that fails refuses the start, naming the position and the way out, unless the
operator passes ``--accept-broken-chain``: that is recorded as
``admin.chain.accepted`` and the daemon goes on. Then the head is anchored at
start, every ``[store] anchor_interval_seconds`` while the log grows, and at a
clean stop, each also logged as ``store.anchored`` for shipping off the host
(see :mod:`eventstore.anchors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from daemon.service.applied import operator_name
from eventstore import EventStore, NewEvent, StoreError
from eventstore.anchors import Anchor, AnchorFileError, head, last, read_anchors, write_anchor
from eventstore.verify import verify_tail
from projections import kinds


class BrokenChainError(StoreError):
    """The log failed its check at start: refused, with the way out."""


class Anchoring:
    """Anchors one log's head to one anchors file."""

    def __init__(self, store: EventStore, path: Path, interval_s: float) -> None:
        self.store = store
        self.path = path
        self.interval_s = interval_s
        self.last: Anchor | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("socbridge.store")

    async def check(self, *, accept_broken: bool) -> None:
        """Verify from the last anchor; refuse a broken log unless ``accept_broken``."""
        anchors = read_anchors(self.path)  # an unreadable file is refused (AnchorFileError)
        self.last = last(anchors)
        report = await verify_tail(self.store, self.last)
        if report.ok:
            if accept_broken:
                self._log.info("store.chain_intact", note="--accept-broken-chain not needed")
            return
        db = self.store.path
        if not accept_broken:
            raise BrokenChainError(
                f"the event log {db} fails its check at position {report.first_bad_position}: "
                f"{report.problem}. Run socbridge verify --db {db}, then restore from a backup "
                "(docs/operations.md, Backup and restore); socbridge run --accept-broken-chain "
                "starts on this log anyway, and records that it did"
            )
        await self.store.append(
            [
                NewEvent(
                    stream="admin:chain",
                    type=kinds.CHAIN_ACCEPTED,
                    data={
                        "first_bad_position": report.first_bad_position,
                        "problem": report.problem,
                        "anchor_position": self.last.position if self.last else None,
                        "operator": operator_name(),
                    },
                    source="socbridge.run",
                )
            ]
        )
        self._log.error(
            "store.chain_accepted",
            first_bad_position=report.first_bad_position,
            problem=report.problem,
        )

    async def anchor(self, reason: str, *, always: bool = True) -> Anchor | None:
        """Write the head's anchor (unless ``always`` is false and the head has not moved
        since the last one)."""
        anchor = await self.store.read_connection_call(lambda conn: head(conn, reason))
        if anchor is None:
            return None
        if not always and self.last is not None and anchor.hash == self.last.hash:
            return None
        try:
            await asyncio.to_thread(write_anchor, self.path, anchor)
        except AnchorFileError as exc:
            # The log itself is fine; the next anchor tries again.
            self._log.error("store.anchor_failed", reason=str(exc))
            return None
        self.last = anchor
        self._log.info("store.anchored", **anchor.to_json())
        return anchor

    def start(self) -> None:
        self._task = asyncio.create_task(self._every(), name="anchors")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.anchor("stop")

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.anchor("interval", always=False)
            except StoreError as exc:
                self._log.error("store.anchor_failed", reason=str(exc))
