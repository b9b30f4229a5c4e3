"""Whether the event log can be written, as the last append found it (disk full, I/O error).

An intake whose append fails with :class:`eventstore.DatabaseUnavailableError` answers 503
with ``Retry-After`` (both desks retry), and the daemon is not ready until an append
succeeds again. One line is logged when writing stops and one when it resumes; on resume
both desks are polled at once, so what they changed meanwhile is caught up without a
restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from daemon.health import Outage

#: What a refused callback or webhook is told: try again in this many seconds.
RETRY_AFTER_S = 30
#: While writing is stopped, both desks are read this often: what a poll records is the
#: first append to succeed once space is back (and the changes it reads are not lost).
PROBE_EVERY_S = 5.0


class LogWritable:
    """The log's write state; ``read_desks`` listeners poll both desks (on resume, and every
    :data:`PROBE_EVERY_S` while writing is stopped)."""

    def __init__(self) -> None:
        self.outage: Outage | None = None
        self.refused = 0  # callbacks and webhooks answered 503 since writing stopped
        self.failed_passes = 0  # pollers' passes that could not record what they read
        self._read_desks: list[Callable[[], None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("socbridge")

    def on_read_desks(self, listener: Callable[[], None]) -> None:
        self._read_desks.append(listener)

    def failed(self, reason: str, *, refused: bool = True) -> None:
        """An append failed; ``refused``: a callback or webhook was answered 503 for it
        (a poller's failed pass is not counted)."""
        self.refused += refused
        self.failed_passes += not refused
        if self.outage is None:
            self.outage = Outage(f"cannot be written ({reason})")
            self._log.error("store.write_stopped", reason=reason, retry_after_s=RETRY_AFTER_S)
            self._probe = asyncio.get_running_loop().create_task(self._probing(), name="probe")

    async def _probing(self) -> None:
        while self.outage is not None:
            await asyncio.sleep(PROBE_EVERY_S)
            self._read()

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    def written(self) -> None:
        """An append succeeded: writing has resumed, if it had stopped."""
        if self.outage is None:
            return
        self._log.warning(
            "store.write_resumed", stopped_since=self.outage.since.isoformat(),
            refused=self.refused, failed_passes=self.failed_passes,
        )  # fmt: skip
        self.outage, self.refused, self.failed_passes = None, 0, 0
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        self._read()

    def _read(self) -> None:
        for listener in self._read_desks:
            listener()

    def describe(self) -> str | None:
        if self.outage is None:
            return None
        return (
            f"{self.outage.describe('the event log')}; {self.refused} callbacks or webhooks "
            f"answered 503, {self.failed_passes} poller passes not recorded"
        )
