"""The daemon as a real subprocess (``python -m daemon run --config FILE``), for crash tests.

Readiness is the daemon's own ``GET /readyz``; a process that exits while it is awaited
fails the wait with the tail of its log.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.support.paths import REPO

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, deadline_s: float = 30.0
) -> T:
    """Re-check ``check`` (every 0.1 s: another process cannot be subscribed to) until truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        result = await check()
        if result:
            return result
        if loop.time() >= deadline:
            raise TimeoutError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.1)


class DaemonProcess:
    """Start, SIGKILL, restart and stop ``socbridge run`` on a config file."""

    def __init__(self, config_path: Path, url: str, log_path: Path) -> None:
        self.config_path = config_path
        self.url = url
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0

    async def start(self, *extra: str) -> None:
        assert self.proc is None or self.proc.returncode is not None
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "daemon", "run", "--config", str(self.config_path), *extra,
                cwd=REPO, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        self.starts += 1

    async def ready(self, session: aiohttp.ClientSession, deadline_s: float = 60.0) -> Any:
        """Wait for ``/readyz`` to answer 200; return its body. The deadline is generous: a
        start timed out at 20 s on a host at load 9 (a process exiting fails the wait at once)."""

        async def check() -> Any:
            assert self.proc is not None
            if self.proc.returncode is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{tail}")
            try:
                async with session.get(f"{self.url}/readyz") as resp:
                    return await resp.json() if resp.status == 200 else None
            except aiohttp.ClientError:
                return None

        return await eventually(check, "the daemon to be ready", deadline_s)

    async def status(self, session: aiohttp.ClientSession) -> Any:
        async with session.get(f"{self.url}/readyz") as resp:
            return await resp.json()

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no checkpoint, in-flight deliveries cut off."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL
        self.kills += 1

    async def stop(self) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL after 15 s)."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()
