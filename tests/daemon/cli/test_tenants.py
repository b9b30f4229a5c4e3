"""Tenant sync switches (R9): ``socbridge tenants list|enable|disable``, followed live.

The CLI runs through its real command line: in this process (off the event loop), and once
per action through the installed entry point as a subprocess (``disable`` and ``list`` here,
``enable`` against the running daemon). The live test runs ``socbridge run`` as a subprocess
on the config ``socbridge sim all`` writes (acme on, globex off), with the simulators in here.
"""

from __future__ import annotations

import json
from pathlib import Path

from daemon.service.applied import record_applied
from daemon.service.config import load_config
from daemon.simulators.rehearsal import PRIORITY_MAPPING, write_config
from eventstore import EventStore, NewEvent
from projections import kinds
from projections.fold import fold
from projections.persist import ProjectionStore
from tests.support.live import live_daemon, socbridge
from tests.support.process import eventually


def _config(folder: Path) -> Path:
    path = folder / "socbridge.toml"
    write_config(path, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 3, 0.5)
    return path


async def _tenants(config: Path, entry: bool = False) -> dict[str, dict[str, object]]:
    done = await socbridge("tenants", "list", "--config", str(config), "--json", entry=entry)
    assert done.returncode == 0, done.stderr
    return {t["tenant"]: t for t in json.loads(done.stdout)["tenants"]}


async def _switches(db: Path) -> list[str]:
    async with await EventStore.open(db, readonly=True) as store:
        return [e.type async for e in store.read() if e.type.startswith("admin.tenant.")]


async def test_tenants_cli_lists_switches_and_refuses_unknown_or_repeated_changes(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    done = await socbridge("tenants", "disable", "acme", "--config", str(config),
                           "--reason", "contract paused", "--operator", "alice",
                           entry=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sync disabled (was on, set by config)" in done.stdout
    assert await _tenants(config) == await _tenants(config, entry=True)
    tenants = await _tenants(config)
    assert {n: (t["sync"], t["set_by"]) for n, t in tenants.items()} == {
        "acme": (False, "switch"),
        "globex": (False, "config"),
    }
    acme = tenants["acme"]
    assert acme["links"] == {"linked": 0, "requested": 0, "unlinked": 0}
    assert acme["switch"]["operator"] == "alice"  # type: ignore[index]
    assert acme["switch"]["reason"] == "contract paused"  # type: ignore[index]

    again = await socbridge("tenants", "disable", "acme", "--config", str(config))
    assert again.returncode == 0 and "already disabled" in again.stdout
    unknown = await socbridge("tenants", "enable", "initech", "--config", str(config))
    assert unknown.returncode == 2
    assert "unknown tenant 'initech'" in unknown.stderr and "acme, globex" in unknown.stderr
    assert await _switches(tmp_path / "events.db") == [kinds.TENANT_SYNC_DISABLED]


async def test_a_config_change_of_sync_enabled_replaces_the_switch_and_a_rebuild_agrees(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path))
    tenants = {t.name: t for t in config.tenants}
    async with await EventStore.open(tmp_path / "events.db") as store:
        await record_applied(store, config, None, "start")
        switch = NewEvent(stream="admin:tenant:globex", type=kinds.TENANT_SYNC_ENABLED,
                          tenant="globex", data={"tenant": "globex"})  # fmt: skip
        await store.append([switch])
        # A change elsewhere keeps the switch; a change of globex's sync_enabled replaces it.
        other = config.model_copy(update={"tenants": (tenants["acme"].model_copy(
            update={"note_type_used": "Resolution"}), tenants["globex"])})  # fmt: skip
        await record_applied(store, other, None, "reload")
        assert fold([e async for e in store.read()]).tenant_switches == {"globex": True}
        globex_on = tenants["globex"].model_copy(update={"sync_enabled": True})
        on_in_file = other.model_copy(update={"tenants": (other.tenants[0], globex_on)})
        recorded = await record_applied(store, on_in_file, None, "reload")
        assert recorded is not None and recorded.data["sync_reset"] == ["globex"]
        events = [e async for e in store.read()]
        live = fold(events)
        assert live.tenant_switches == {} and live.config_hash == recorded.data["hash"]
        projections = ProjectionStore(store)
        await projections.load()  # creates its tables
        await projections.save(live)
        assert (await ProjectionStore(store).load()).to_json() == live.to_json()


async def test_disable_while_running_stops_sync_and_enable_resumes_and_rereads(
    tmp_path: Path,
) -> None:
    async with live_daemon(tmp_path) as live:
        config = str(live.config_path)
        linked = await live.analyst.create_ticket("Linked before", "a", priority="normal")
        cw = await live.reaches_connectwise(linked["id"])
        assert cw["priority"]["name"] == PRIORITY_MAPPING["normal"]

        seen = len(live.log_lines())
        done = await socbridge("tenants", "disable", "acme", "--config", config, "--reason", "test")
        assert done.returncode == 0, done.stderr
        await live.log_line(
            lambda line: line["event"] == "tenant.sync_off" and line["tenant"] == "acme",
            "the daemon to fold the switch",
            seen,
        )
        sent = len(live.rehearsal.soc.dispatcher.deliveries)
        await live.analyst.set(linked["id"], priority="urgent")  # changed while off
        created = await live.analyst.create_ticket("Created while off", "b")
        await live.webhook_refused(created["id"], sent)
        await live.webhook_refused(linked["id"], sent)
        assert await live.cw_ticket_for(created["id"]) is None
        assert (await live.technician.ticket(cw["id"]))["priority"]["name"] == PRIORITY_MAPPING[
            "normal"
        ]
        assert not [e for e in await live.events() if e.ticket == f"soc:{created['id']}"]

        done = await socbridge("tenants", "enable", "acme", "--config", config, entry=True)
        assert done.returncode == 0, done.stderr
        # Back on: the linked ticket is re-read and what changed while off crosses over.

        async def reconciled() -> bool:
            ticket = await live.technician.ticket(cw["id"])
            return bool(ticket["priority"]["name"] == PRIORITY_MAPPING["urgent"])

        await eventually(reconciled, "the change made while off to reach ConnectWise", 20)
        after = await live.analyst.create_ticket("Created after enable", "c")
        await live.reaches_connectwise(after["id"])
        types = [e.type for e in await live.events("admin.tenant.")]
        assert types == [kinds.TENANT_SYNC_DISABLED, kinds.TENANT_SYNC_ENABLED]
