"""Which tenants sync right now (R9), as intake, pollers and outbox see it while the daemon runs.

A tenant syncs when it is in the applied configuration and its effective
switch is on: the config's ``sync_enabled``, overridden by the latest
``admin.tenant.sync_enabled`` / ``sync_disabled`` event the sync engine has
folded (``socbridge tenants enable|disable``); a config change of that
tenant's ``sync_enabled`` resets the override (see :mod:`daemon.service.applied`).

:class:`TenantDirectory` answers from the engine's current rules and state on
every lookup, so a switch or a reload takes effect at the next callback,
webhook or poll without rebuilding anything. :meth:`TenantDirectory.by` gives
the ``remote id -> tenant`` mappings the intakes and pollers take; a tenant
whose sync is off is simply absent from them: it is neither read nor written.

When a tenant comes back on, the changes made on either side while it was
off were never read; :meth:`TenantDirectory.refresh` calls ``on_enabled``
for it, and the daemon re-reads that tenant's linked tickets then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Literal

import structlog

from daemon.sync.engine import SyncEngine
from eventstore import RecordedEvent
from projections import kinds

RemoteKey = Literal["cw_company_id", "soc_organization_id"]


class LiveTenants(Mapping[int, str]):
    """``remote id -> tenant name`` of the tenants whose sync is on, looked up live."""

    def __init__(self, directory: TenantDirectory, key: RemoteKey) -> None:
        self._directory = directory
        self._key = key
        self._built: tuple[object, object, int, dict[int, str]] | None = None

    def _current(self) -> dict[int, str]:
        # Every callback and webhook looks a tenant up. The map is rebuilt only when
        # what it derives from changed: the rules (a reload swaps them), the state
        # (a load swaps it), or a switch or an applied config folded since
        # (TenantDirectory.refresh counts those).
        directory = self._directory
        rules, state, generation = (
            directory.engine.rules,
            directory.engine.state,
            directory.generation,
        )
        built = self._built
        if built is not None and built[0] is rules and built[1] is state and built[2] == generation:
            return built[3]
        current = {
            getattr(t, self._key): t.name
            for t in rules.tenants.values()
            if directory.enabled(t.name)
        }
        self._built = (rules, state, generation, current)
        return current

    def __getitem__(self, remote_id: int) -> str:
        return self._current()[remote_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"LiveTenants({self._key}: {self._current()!r})"


class TenantDirectory:
    """The live tenant switches: the engine's applied rules plus the folded switch events."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self._on_enabled: list[Callable[[str], None]] = []
        self._log = structlog.get_logger("socbridge.tenants")
        self._known = self.enabled_names()
        #: Counts refreshes: a tenant map built before the last one is stale.
        self.generation = 0
        engine.on_event(self._folded)

    def enabled(self, tenant: str) -> bool:
        return self.engine.tenant_enabled(tenant)

    def enabled_names(self) -> frozenset[str]:
        return frozenset(name for name in self.engine.rules.tenants if self.enabled(name))

    def by(self, key: RemoteKey) -> LiveTenants:
        return LiveTenants(self, key)

    def on_enabled(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(tenant)`` whenever a tenant's sync comes (back) on."""
        self._on_enabled.append(callback)

    def refresh(self) -> None:
        """Notice tenants switched on or off since the last look (after a switch or reload)."""
        self.generation += 1
        now = self.enabled_names()
        for name in sorted(now - self._known):
            self._log.info("tenant.sync_on", tenant=name)
            for callback in self._on_enabled:
                callback(name)
        for name in sorted(self._known - now):
            self._log.info("tenant.sync_off", tenant=name)
        self._known = now

    def _folded(self, event: RecordedEvent) -> None:
        if event.type in (
            kinds.TENANT_SYNC_ENABLED,
            kinds.TENANT_SYNC_DISABLED,
            kinds.CONFIG_APPLIED,
        ):
            self.refresh()
