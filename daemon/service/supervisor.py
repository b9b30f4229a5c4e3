"""Background tasks that come back: an unexpected exception restarts the task with backoff.

The pollers and the outbox are loops over the log and the remotes with no state a
restart loses (the log holds it), so a bug or an unforeseen error in one of them
costs a restart of that task, not the daemon's ability to sync until someone
restarts it. While a task is down the daemon is not ready (``/readyz`` names it),
each failure is logged at error with its reason and counted
(``socbridge_task_restarts_total{task}``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter

from daemon.health import Outage

#: Restart backoff: 1 s doubling to 60 s; back to 1 s after a minute of running.
FIRST_DELAY_S, MAX_DELAY_S, HEALTHY_AFTER_S = 1.0, 60.0, 60.0


class Supervisor:
    """Runs named coroutines, restarting each when it raises (not when it returns)."""

    def __init__(self, restarts: Counter) -> None:
        self._restarts = restarts
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Tasks that failed and wait for their restart.
        self.down: dict[str, Outage] = {}
        self._log = structlog.get_logger("socbridge")

    def spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._keep(name, run), name=name)

    def reasons(self) -> list[str]:
        return [outage.describe(f"task {name}") for name, outage in sorted(self.down.items())]

    async def stop(self, *names: str) -> None:
        """Cancel the named tasks (all when none are named) and wait for them to end."""
        tasks = [self._tasks.pop(n) for n in (names or list(self._tasks)) if n in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = FIRST_DELAY_S
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except Exception as exc:
                if time.monotonic() - started >= HEALTHY_AFTER_S:
                    delay = FIRST_DELAY_S
                reason = f"{type(exc).__name__}: {exc}"
                self.down[name] = Outage(f"down ({reason})")
                self._restarts.labels(name).inc()
                self._log.error(
                    "task.failed", task=name, reason=reason, restart_in_s=delay, exc_info=exc
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            self.down.pop(name, None)
            self._log.warning("task.restarted", task=name)
