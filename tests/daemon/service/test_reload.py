"""SIGHUP (``systemctl reload``) re-reads the config: applied live and recorded, or refused whole.

The daemon is a real subprocess (``socbridge run``) on the config ``socbridge sim all``
writes; the simulators run in this process. Effects are observed as an operator would:
tickets on the desks, events in the log, JSON lines in the daemon's log.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import aiohttp
from aiohttp import web

from daemon.service.app import APPLIED, build_app
from daemon.service.applied import record_applied
from daemon.service.config import config_hash, load_config
from daemon.simulators.rehearsal import write_config
from eventstore import EventStore
from projections import kinds
from tests.support.live import live_daemon, set_tenant
from tests.support.process import eventually


async def test_sighup_applies_a_tenant_change_live_and_records_the_new_hash(
    tmp_path: Path,
) -> None:
    async with live_daemon(tmp_path) as live:
        [started] = await live.events(kinds.CONFIG_APPLIED)
        assert started.data["reason"] == "start"
        assert started.data["hash"] == config_hash(load_config(live.config_path))
        text = live.config_path.read_text()
        text = set_tenant(text, "acme", sync_enabled=False)
        live.config_path.write_text(set_tenant(text, "globex", sync_enabled=True))
        live.hup()

        async def reloaded() -> list[object]:
            return [e for e in await live.events(kinds.CONFIG_APPLIED) if e != started]

        [applied] = await eventually(reloaded, "the reload to be recorded")
        assert applied.data["reason"] == "reload"
        assert applied.data["hash"] == config_hash(load_config(live.config_path))
        assert applied.data["previous_hash"] == started.data["hash"] != applied.data["hash"]
        assert applied.data["changed"] == [
            "tenants.acme.sync_enabled",
            "tenants.globex.sync_enabled",
        ]
        assert {t["name"]: t["sync_enabled"] for t in applied.data["tenants"]} == {
            "acme": False,
            "globex": True,
        }
        # No restart: globex (off at start) now syncs, acme (on at start) is neither read
        # nor written.
        seen = len(live.log_lines())
        acme = await live.analyst.create_ticket("Acme after reload", "x", organization=9001)
        globex = await live.analyst.create_ticket("Globex after reload", "y", organization=9002)
        cw = await live.reaches_connectwise(globex["id"])
        assert cw["company"]["id"] == 251
        await live.webhook_refused(acme["id"])
        # A reconciliation poll read acme's ticket from the export and skipped it (the desk
        # holds no other ticket of an organization that does not sync).
        await live.log_line(
            lambda line: (
                line["event"] == "poll.done" and line["desk"] == "soc" and line["ignored"] >= 1
            ),
            "a reconciliation poll past acme's ticket",
            seen,
        )
        assert [e for e in await live.events() if e.ticket == f"soc:{acme['id']}"] == []
        assert await live.cw_ticket_for(acme["id"]) is None
        assert live.daemon.proc is not None and live.daemon.proc.returncode is None
    assert live.daemon.starts == 1


async def test_sighup_refuses_an_invalid_or_restart_only_config_and_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    async with live_daemon(tmp_path) as live:
        good = live.config_path.read_text()
        # 1. Invalid: a misspelt key. The log line names the file, the key and the fix.
        live.config_path.write_text(set_tenant(good, "acme", sync_enabeld=False))
        seen = len(live.log_lines())
        live.hup()
        refused = await live.log_line(
            lambda line: line["event"] == "config.reload_refused", "the refusal", seen
        )
        assert refused["reason"] == "invalid" and refused["level"] == "error"
        assert str(live.config_path) in refused["error"]
        assert "tenants.0.sync_enabeld: unknown key" in refused["error"]
        assert "fix" in refused
        # 2. A key that needs a restart, with a live change beside it: refused whole.
        text = set_tenant(good, "acme", sync_enabled=False)
        text = text.replace("[store]\n", '[store]\nsynchronous = "NORMAL"\n', 1)
        live.config_path.write_text(text)
        seen = len(live.log_lines())
        live.hup()
        refused = await live.log_line(
            lambda line: line["event"] == "config.reload_refused", "the second refusal", seen
        )
        assert refused["reason"] == "restart_required"
        assert refused["keys"] == ["store.synchronous"]
        assert "systemctl restart" in refused["fix"]
        # The running config stays in full: acme still syncs, nothing was recorded.
        soc = await live.analyst.create_ticket("Acme after refusals", "z", organization=9001)
        await live.reaches_connectwise(soc["id"])
        assert len(await live.events(kinds.CONFIG_APPLIED)) == 1
        async with live.http.get(live.rehearsal.daemon_url + "/readyz") as resp:
            assert resp.status == 200


async def test_a_start_with_the_last_applied_config_appends_nothing(tmp_path: Path) -> None:
    write_config(tmp_path / "socbridge.toml", "http://127.0.0.1:1", "http://127.0.0.1:2",
                 "127.0.0.1", 3, 0.5)  # fmt: skip
    config = load_config(tmp_path / "socbridge.toml")
    async with await EventStore.open(tmp_path / "events.db") as store:
        first = await record_applied(store, config, tmp_path / "socbridge.toml", "start")
        again = await record_applied(store, config, tmp_path / "socbridge.toml", "start")
        other = config.model_copy(update={"tenants": config.tenants[:1]})
        changed = await record_applied(store, other, tmp_path / "socbridge.toml", "start")
        assert first is not None and again is None and changed is not None
        assert first.data["changed"] == [] and first.data["sync_reset"] == []
        assert changed.data["changed"] == ["tenants.globex"]
        assert changed.data["previous_hash"] == first.data["hash"]
        # Secrets are references in the config, never their values.
        text = str(first.data)
        for name in ("cw_public_key", "cw_private_key", "soc_api_token"):
            secret = (tmp_path / "secrets" / name).read_text().strip()
            assert secret not in text
            assert str(tmp_path / "secrets" / name) in text


async def test_the_allowlist_follows_the_applied_config_for_the_next_request(
    tmp_path: Path,
) -> None:
    path = tmp_path / "socbridge.toml"
    write_config(path, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 3, 0.5)
    config = load_config(path)
    app = build_app(config, path)
    app.cleanup_ctx.clear()  # only the guard and /healthz: no store, no remotes
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/healthz"
            async with http.get(url) as resp:
                assert resp.status == 200
            # What a reload swaps in: the same object the guard reads at each request.
            server = config.server.model_copy(
                update={"admin_sources": (IPv4Network("10.0.0.0/8"),)}
            )
            app[APPLIED].config = config.model_copy(update={"server": server})
            async with http.get(url) as resp:
                assert resp.status == 403
    finally:
        await runner.cleanup()
