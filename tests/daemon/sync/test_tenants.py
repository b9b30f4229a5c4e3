"""The live tenant maps intake and pollers look tenants up in (R9): cached between
lookups, and never stale after a switch is folded or a reload swaps the rules."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from daemon.sync.engine import SyncEngine
from daemon.sync.rules import TenantRule
from daemon.sync.tenants import TenantDirectory
from eventstore import EventStore, NewEvent
from projections import kinds
from tests.support.rules import RULES

GLOBEX = TenantRule("globex", 9002, 251, True, "Discussion", frozenset({"Discussion"}))


async def test_a_folded_switch_and_a_rules_swap_show_at_the_next_lookup(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "events.db", synchronous="NORMAL")
    engine = SyncEngine(store, RULES, checkpoint_every=10_000)
    await engine.load()
    directory = TenantDirectory(engine)
    by_company = directory.by("cw_company_id")
    by_org = directory.by("soc_organization_id")
    task = asyncio.create_task(engine.run())
    try:
        assert dict(by_company) == {250: "acme"} and by_org[9001] == "acme"
        assert by_company[250] == "acme"  # served from the map built above

        folded = asyncio.Event()
        engine.on_event(lambda e: folded.set() if e.type == kinds.TENANT_SYNC_DISABLED else None)
        await store.append([NewEvent(stream="admin:tenant:acme", type=kinds.TENANT_SYNC_DISABLED,
                                     tenant="acme", data={"tenant": "acme"})])  # fmt: skip
        await folded.wait()
        assert 250 not in by_company and dict(by_org) == {}

        # A reload swaps the rules object (and refreshes the directory).
        engine.rules = dataclasses.replace(RULES, tenants={**RULES.tenants, "globex": GLOBEX})
        directory.refresh()
        assert dict(by_company) == {251: "globex"} and by_org[9002] == "globex"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
