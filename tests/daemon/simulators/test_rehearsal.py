"""The README's "rehearsing a configuration by hand" path, as an operator runs it: ``socbridge
sim all`` in one process, ``socbridge run`` on the config it wrote in another, and a SOC
incident that crosses to ConnectWise using only what the rehearsal sheet says."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from daemon.connectors.remote import basic_auth
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.harness import Analyst
from tests.support.process import REPO, DaemonProcess, eventually

SHEET_KEYS = {
    "connectwise": {
        "url", "company_id", "client_id", "public_key", "private_key", "board", "statuses",
        "priorities", "source", "note_type_used_by_soc", "note_types_sent_to_soc",
    },
    "soc": {"url", "email", "token"},
    "tenants": None,
    "daemon": {
        "url", "config", "connectwise_callback_url", "soc_webhook_url", "health_url",
        "console_url",
    },
}  # fmt: skip


def three_free_ports() -> int:
    """A port P such that P, P+1 and P+2 are free now (sim all uses P..P+2)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 2 > 65535:
            continue
        try:
            for p in (port + 1, port + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no three consecutive free ports")


def check_sheet(sheet: dict[str, Any]) -> None:
    assert set(sheet) == set(SHEET_KEYS)
    for section, keys in SHEET_KEYS.items():
        if keys is not None:
            assert set(sheet[section]) == keys, section
    cw = sheet["connectwise"]
    assert set(cw["board"]) == {"id", "name"}
    assert set(cw["statuses"]) == {"new", "routing", "unlinked", "solved", "unresolved"}
    assert all(set(v) == {"id", "name"} for v in cw["statuses"].values())
    assert set(cw["priorities"]) == {"urgent", "high", "normal", "low"}
    assert all(set(v) == {"id", "name"} for v in cw["priorities"].values())
    assert cw["source"] is None or set(cw["source"]) == {"id", "name"}
    # Fewer than all three note types go to the SOC in the default fixture.
    assert 0 < len(cw["note_types_sent_to_soc"]) < 3
    tenants = sheet["tenants"]
    assert len(tenants) >= 2 and any(not t["sync_enabled"] for t in tenants)
    for tenant in tenants:
        assert set(tenant) == {"soc_organization_id", "cw_company_id", "sync_enabled"}


async def test_sim_all_sheet_and_run_bring_a_bridge_up(tmp_path: Path) -> None:
    port = three_free_ports()
    config, sheet_path = tmp_path / "rehearsal" / "socbridge.toml", tmp_path / "sheet.json"
    sims = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "sim", "all", "--port", str(port),
        "--write-config", str(config), "--info", str(sheet_path), "--poll-seconds", "2",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    daemon: DaemonProcess | None = None
    try:
        assert sims.stdout is not None
        banner = b""
        while b"now run: socbridge run --config" not in banner:
            line = await asyncio.wait_for(sims.stdout.readline(), 60)
            assert line, f"sim all exited: {banner.decode()}"
            banner += line
        sheet = json.loads(sheet_path.read_text())
        check_sheet(sheet)
        assert sheet["daemon"]["config"] == str(config.resolve())

        daemon = DaemonProcess(config, sheet["daemon"]["url"], tmp_path / "daemon.log")
        await daemon.start()
        async with aiohttp.ClientSession() as http:
            await daemon.ready(http, deadline_s=60)
            async with http.get(sheet["daemon"]["health_url"]) as resp:
                assert resp.status == 200
            # The sheet's ConnectWise API keys work against its ConnectWise URL.
            cw = sheet["connectwise"]
            auth = basic_auth(f"{cw['company_id']}+{cw['public_key']}", cw["private_key"])
            board_url = f"{cw['url']}/{cwfx.CODEBASE}apis/3.0/service/boards/{cw['board']['id']}"
            async with http.get(board_url, headers={"clientId": cw["client_id"], **auth}) as r:
                assert r.status == 200 and (await r.json())["name"] == cw["board"]["name"]

            enabled = next(t for t in sheet["tenants"] if t["sync_enabled"])
            analyst = Analyst(http, sheet["soc"]["url"])
            incident = await analyst.create_ticket(
                "Rehearsal: suspicious login", "seen from the sheet",
                organization=enabled["soc_organization_id"],
            )  # fmt: skip

            async def crossed() -> list[dict[str, Any]] | None:
                url = f"{cw['url']}/{cwfx.CODEBASE}apis/3.0/service/tickets"
                params = {"conditions": f'summary contains "{incident["subject"]}"'}
                headers = {"clientId": cw["client_id"], **auth}
                async with http.get(url, params=params, headers=headers) as r:
                    found = await r.json()
                return found or None

            found = await eventually(crossed, "the incident in ConnectWise", 60)
            assert found[0]["company"]["id"] == enabled["cw_company_id"]
            # `socbridge run` on the written config serves the console at the sheet's address.
            async with http.get(sheet["daemon"]["console_url"] + "links") as resp:
                assert resp.status == 200 and f"#{found[0]['id']}" in await resp.text()
        assert await daemon.stop() == 0
    finally:
        if daemon is not None:
            await daemon.stop()
        if sims.returncode is None:
            sims.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(sims.wait(), 30) == 0
