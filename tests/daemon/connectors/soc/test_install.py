"""``socbridge webhooks install|remove|status`` against the simulator."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from daemon.cli.main import main
from daemon.cli.webhooks import run_webhooks
from daemon.connectors.soc import install
from daemon.connectors.soc.client import SocClient, token_auth
from daemon.connectors.soc.settings import SocSettings
from daemon.service.secrets import Secret, load_secret
from daemon.simulators.soc import SocSimulator, fixture
from eventstore import EventStore
from tests.support.paths import REPO


async def test_install_creates_webhook_and_stores_secret_0600(
    sim: SocSimulator, client: SocClient, settings: SocSettings
) -> None:
    result = await install.install(client, settings)
    assert result.action == "created" and result.healthy
    [hook] = sim.webhooks.webhooks.values()
    assert hook.endpoint == settings.webhook.public_url
    assert set(hook.subscriptions) == set(install.SUBSCRIPTIONS)
    path = Path(settings.webhook.signing_secret)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(str(path)).reveal() == hook.secret


async def test_install_is_idempotent_and_repairs_drift(
    sim: SocSimulator, client: SocClient, settings: SocSettings
) -> None:
    first = await install.install(client, settings)
    again = await install.install(client, settings)
    assert again.action == "unchanged" and len(sim.webhooks.webhooks) == 1
    assert again.webhook_id == first.webhook_id
    hook = sim.webhooks.webhooks[str(first.webhook_id)]
    hook.endpoint = "https://old.example/hook"
    hook.status = "inactive"
    status = await install.status(client, settings)
    assert not status.healthy and not status.endpoint_ok and not status.active
    repaired = await install.install(client, settings)
    assert repaired.action == "updated" and repaired.healthy
    assert sim.webhooks.webhooks[str(first.webhook_id)].endpoint == settings.webhook.public_url


async def test_status_notices_a_rotated_secret_and_install_fixes_it(
    sim: SocSimulator, client: SocClient, settings: SocSettings
) -> None:
    result = await install.install(client, settings)
    sim.webhooks.reset_secret(str(result.webhook_id))
    status = await install.status(client, settings)
    assert status.secret_stored and not status.secret_matches
    assert "not the webhook's current one" in " ".join(status.problems)
    assert (await install.install(client, settings)).secret_matches


async def test_intake_follows_a_reinstalled_secret_without_restart(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore, daemon: str
) -> None:
    result = await install.install(client, settings)
    sim.webhooks.reset_secret(str(result.webhook_id))
    await install.install(client, settings)
    t = await client.create_ticket(subject="after rotation", body="b", organization_id=9001)
    await sim.dispatcher.drain()
    assert [d.outcome for d in sim.dispatcher.deliveries] == ["delivered 200"]
    assert len(await store.read_stream(f"soc:ticket:{t['id']}")) == 1


async def test_remove_deletes_webhook_and_secret_and_is_idempotent(
    sim: SocSimulator, client: SocClient, settings: SocSettings
) -> None:
    await install.install(client, settings)
    removed = await install.remove(client, settings)
    assert removed.action == "removed" and sim.webhooks.webhooks == {}
    assert not os.path.exists(settings.webhook.signing_secret)
    assert (await install.remove(client, settings)).action == "none"
    assert not (await install.status(client, settings)).installed


async def test_run_webhooks_prints_a_report_without_the_secret(
    sim: SocSimulator, settings: SocSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_webhooks("status", settings) == 1
    assert await run_webhooks("install", settings) == 0
    assert await run_webhooks("status", settings) == 0
    out = capsys.readouterr().out
    assert "installed (created)" in out and "current: True" in out
    [hook] = sim.webhooks.webhooks.values()
    assert hook.secret not in out and fixture.API_TOKEN not in out
    assert await run_webhooks("remove", settings) == 0


async def test_run_webhooks_reports_a_refused_token(
    sim: SocSimulator, settings: SocSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(settings.api_token).write_text("wrong-token")
    assert await run_webhooks("install", settings) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "wrong-token" not in err


async def test_missing_token_file_is_a_config_error(
    settings: SocSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(settings.api_token).unlink()
    assert await run_webhooks("status", settings) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_refuses_a_config_without_soc_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "socbridge.toml"
    cfg.write_text('[store]\npath = "events.db"\n')
    assert main(["webhooks", "status", "--config", str(cfg)]) == 2
    assert "soc: required key is missing" in capsys.readouterr().err


def write_config(path: Path, settings: SocSettings) -> Path:
    path.write_text(
        f"""
[store]
path = "events.db"

[connectwise]
site_url = "https://na.myconnectwise.net"
company_id = "demo_msp"
public_key = "credential:cw_public"
private_key = "credential:cw_private"
client_id = "3c5b2a9e-7f1d-4e8a-9b6c-0d2e4f6a8b1c"
api_member = "socbridge"

[soc]
url = "{settings.url}"
email = "{settings.email}"
api_token = "{settings.api_token}"
backoff_base_seconds = 0.01

[soc.webhook]
public_url = "{settings.webhook.public_url}"
signing_secret = "{settings.webhook.signing_secret}"

[[tenants]]
name = "acme"
soc_organization_id = 9001
cw_company_id = 250
"""
    )
    return path


async def test_webhooks_command_runs_from_the_config_file(
    sim: SocSimulator, settings: SocSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "socbridge.toml", settings)
    # main() runs its own event loop, so run it off this one.
    code = await asyncio.to_thread(main, ["webhooks", "install", "--config", str(cfg)])
    assert code == 0 and len(sim.webhooks.webhooks) == 1
    assert await asyncio.to_thread(main, ["webhooks", "status", "--config", str(cfg)]) == 0
    assert await asyncio.to_thread(main, ["webhooks", "remove", "--config", str(cfg)]) == 0
    assert sim.webhooks.webhooks == {}
    assert "installed (created)" in capsys.readouterr().out


async def test_sim_soc_command_serves_the_desk(http: aiohttp.ClientSession) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "sim", "soc", "--port", "0", "--export-lag", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once listening
        url = line.split(" on ", 1)[1].split("/api/v2", 1)[0]
        auth = token_auth(fixture.API_EMAIL, Secret(fixture.API_TOKEN))
        async with http.get(f"{url}/api/v2/users/me.json", headers=auth) as r:
            assert r.status == 200 and (await r.json())["user"]["id"] == fixture.API_USER_ID
    finally:
        proc.terminate()
        proc.wait(timeout=10)
