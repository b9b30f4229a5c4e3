"""Re-reading the configuration while the daemon runs: ``SIGHUP`` and ``systemctl reload``.

A reload re-reads and validates the file the daemon was started with. It is
all or nothing, so what runs is always exactly the last applied config:

* an invalid file is refused with one log line naming the file, the key and
  the fix; the running config stays in effect and nothing is appended;
* a change to a key that needs a restart (anything outside
  :data:`daemon.service.applied.LIVE_KEYS`: store, listener address and TLS files,
  the connectors' URLs, credentials, board and poll settings) refuses the
  whole reload, naming those keys;
* otherwise the new config is recorded (``admin.config.applied`` with its
  hash and the changed keys) and then applied at once: tenants (added,
  removed, ``sync_enabled``, note preferences), the sync rules and conflict
  policy, and the source allowlists. An unchanged config appends nothing.

Under systemd the daemon says ``RELOADING=1`` while it works and ``READY=1``
after, whatever the outcome. Reloads are serialised; signals that arrive
during one coalesce into one more.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web

from daemon.service.app import APPLIED, ENGINE, METRICS, RUNNING, STORE, TENANTS
from daemon.service.applied import changed_keys, needs_restart, record_applied
from daemon.service.config import Config, ConfigError, canonical_config, config_hash, load_config
from daemon.service.sdnotify import Notifier
from daemon.sync.rules import rules_from_config
from eventstore import StoreError


class Reloader:
    """Applies the configuration file again on request (one reload at a time)."""

    def __init__(self, app: web.Application, notifier: Notifier) -> None:
        self.app = app
        self.notifier = notifier
        self._log = structlog.get_logger("socbridge")
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False

    def request(self) -> None:
        """Reload soon (the SIGHUP handler): coalesces with a reload in progress."""
        if self._closed:
            self._log.info("config.reload_ignored", reason="the daemon is stopping")
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="reload")

    def close(self) -> None:
        """The daemon is stopping: no more reloads; one still waiting for start is dropped."""
        self._closed = True
        if self._task is not None and not self.app[RUNNING].is_set():
            self._task.cancel()

    async def wait(self) -> None:
        """Until no reload is running (at exit)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> bool:
        """Re-read, validate and apply the file; True when it is (or already was) in effect."""
        await self.app[RUNNING].wait()  # a signal during start is applied once it runs
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.notify(RELOADING=1, MONOTONIC_USEC=usec, STATUS="reloading configuration")
        ok = False
        try:
            ok = await self._apply()
        except Exception:
            # Each reload is a task of its own: the next SIGHUP starts a fresh one. Counted
            # with the supervised tasks' restarts, so an alert on those sees it too.
            self.app[METRICS].task_restarts.labels("reload").inc()
            self._log.exception("config.reload_failed", detail="the running configuration stays")
        finally:
            status = "serving" if ok else "serving; last reload refused (see the journal)"
            self.notifier.notify(READY=1, STATUS=status)
        return ok

    async def _apply(self) -> bool:
        applied = self.app[APPLIED]
        path = applied.path
        if path is None:
            self._log.error("config.reload_refused", reason="no configuration file to re-read")
            return False
        self._log.info("config.reload_started", path=str(path))
        try:
            new = load_config(path)
        except ConfigError as exc:
            self._log.error(
                "config.reload_refused",
                path=str(path),
                reason="invalid",
                error=str(exc),
                fix="correct the file and reload again; the running configuration stays in effect",
            )
            return False
        changed = changed_keys(canonical_config(applied.config), canonical_config(new))
        restart = needs_restart(changed)
        if restart:
            self._log.error(
                "config.reload_refused",
                path=str(path),
                reason="restart_required",
                keys=restart,
                error=f"configuration {path}: {', '.join(restart)} cannot change while running",
                fix="restart the service (systemctl restart socbridge) to apply them, or revert "
                "them and reload; nothing of this file was applied",
            )
            return False
        try:
            recorded = await record_applied(self.app[STORE], new, path, "reload")
        except StoreError as exc:
            self._log.error(
                "config.reload_refused",
                path=str(path),
                reason="not_recorded",
                error=str(exc),
                fix="check the event log; the running configuration stays in effect",
            )
            return False
        self._swap(new)
        self._log.info(
            "config.reloaded",
            path=str(path),
            hash=config_hash(new),
            changed=changed,
            recorded=recorded is not None,
        )
        return True

    def _swap(self, new: Config) -> None:
        # No await in here: intake, sync and outbox see the old or the new config, never a mix.
        engine = self.app[ENGINE]
        engine.rules = rules_from_config(new)
        engine.checkpoint_every = new.sync.checkpoint_every
        self.app[APPLIED].config = new
        self.app[TENANTS].refresh()
        engine.changed.set()  # the outbox re-checks held commands (a tenant may be back on)
