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
from datetime import UTC, datetime

import structlog

#: What a refused callback or webhook is told: try again in this many seconds.
RETRY_AFTER_S = 30
#: While writing is stopped, both desks are read this often: what a poll records is the
#: first append to succeed once space is back (and the changes it reads are not lost).
PROBE_EVERY_S = 5.0


class LogWritable:
    def __init__(self) -> None:
        self.since: datetime | None = None  # not writable since
        self.reason: str | None = None
        self.refused = 0
        self._on_resume: list[Callable[[], None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("socbridge")

    def on_resume(self, listener: Callable[[], None]) -> None:
        self._on_resume.append(listener)

    def failed(self, reason: str) -> None:
        self.refused += 1
        if self.since is None:
            self.since, self.reason = datetime.now(UTC), reason
            self._log.error("store.write_stopped", reason=reason, retry_after_s=RETRY_AFTER_S)
            self._probe = asyncio.get_running_loop().create_task(self._probing(), name="probe")

    async def _probing(self) -> None:
        while self.since is not None:
            await asyncio.sleep(PROBE_EVERY_S)
            for listener in self._on_resume:
                listener()

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    def written(self) -> None:
        """An append succeeded: writing has resumed, if it had stopped."""
        if self.since is None:
            return
        self._log.warning(
            "store.write_resumed", stopped_since=self.since.isoformat(), refused=self.refused
        )
        self.since, self.reason, self.refused = None, None, 0
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        for listener in self._on_resume:
            listener()

    def describe(self) -> str | None:
        if self.since is None:
            return None
        when = self.since.isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"the event log cannot be written since {when}: {self.reason}"
