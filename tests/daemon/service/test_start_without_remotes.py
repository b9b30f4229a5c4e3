"""A desk down when ``socbridge run`` starts: the daemon serves anyway, records what
arrives, says why it is not ready, and syncs once the desk answers, without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.rehearsal import start_rehearsal
from tests.support.live import Live
from tests.support.process import DaemonProcess, eventually

pytestmark = pytest.mark.slow


async def _soc_ticket_for(live: Live, cw_id: int) -> dict[str, Any] | None:
    for ticket in await live.analyst.tickets():
        if ticket.get("external_id") == f"socbridge:cw:{cw_id}":
            return ticket
    return None


@pytest.mark.parametrize("down", ["ConnectWise", "SOC desk"])
async def test_a_desk_down_at_start_then_back(tmp_path: Path, down: str) -> None:
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, tmp_path / "socbridge.toml", None, poll_s=0.5, export_lag=0.1
    )
    desk = rehearsal.cw if down == "ConnectWise" else rehearsal.soc
    await desk.stop()  # refused connections on its port from here on
    daemon = DaemonProcess(rehearsal.config_path, rehearsal.daemon_url, tmp_path / "daemon.log")
    try:
        async with aiohttp.ClientSession() as http:
            live = Live(rehearsal, daemon, http)
            await daemon.start()

            async def not_ready() -> Any:
                assert daemon.proc is not None and daemon.proc.returncode is None, "exited"
                try:
                    async with http.get(f"{daemon.url}/readyz") as resp:
                        return await resp.json() if resp.status == 503 else None
                except aiohttp.ClientError:
                    return None

            status = await eventually(not_ready, "the daemon to serve while not ready", 60)
            assert any(r.startswith(f"{down} unreachable") for r in status["reasons"]), status
            async with http.get(f"{daemon.url}/healthz") as resp:
                assert resp.status == 200

            # A ticket raised on the desk that is up: recorded at once, delivered later.
            if down == "ConnectWise":
                made = await live.analyst.create_ticket("Down at start", "seen while CW is down")
                stream = f"soc:{made['id']}"
            else:
                made = await live.technician.create_ticket("Down at start")
                stream = f"cw:{made['id']}"

            async def recorded() -> bool:
                return any(e.ticket == stream for e in await live.events())

            await eventually(recorded, "the ticket's event to be recorded", 20)
            await live.log_line(
                lambda line: line["event"] == "hooks.install_failed", "the failed install"
            )

            await desk.start()  # same port: the desk is back
            if down == "ConnectWise":
                cw = await live.reaches_connectwise(made["id"])
                assert cw["summary"].startswith("Down at start")
            else:

                async def on_soc() -> dict[str, Any] | None:
                    return await _soc_ticket_for(live, made["id"])

                soc = await eventually(on_soc, "the CW ticket to reach the SOC desk", 30)
                assert "Down at start" in soc["subject"]
            ready = await daemon.ready(http, deadline_s=60)
            assert ready["reasons"] == []
            await live.log_line(lambda line: line["event"] == "hooks.installed", "the install")
            await live.log_line(lambda line: line["event"] == "remote.up", "the desk back")
            assert daemon.starts == 1 and daemon.proc is not None
            assert daemon.proc.returncode is None  # never restarted
            assert "Traceback" not in daemon.log_path.read_text(errors="replace")
            assert await daemon.stop() == 0
    finally:
        await daemon.stop()
        await rehearsal.stop()


async def test_readyz_says_when_a_command_waits_too_long(tmp_path: Path) -> None:
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, tmp_path / "socbridge.toml", None, poll_s=0.5, export_lag=0.1
    )
    with rehearsal.config_path.open("a") as config:
        config.write("\n[health]\nmax_pending_age_seconds = 1\n")
    daemon = DaemonProcess(rehearsal.config_path, rehearsal.daemon_url, tmp_path / "daemon.log")
    try:
        async with aiohttp.ClientSession() as http:
            live = Live(rehearsal, daemon, http)
            await daemon.start()
            assert (await daemon.ready(http))["reasons"] == []
            rehearsal.cw.faults.api.append(ApiFault(503, 1_000_000))
            made = await live.analyst.create_ticket("Waits", "ConnectWise answers 503")

            async def stuck() -> Any:
                body = await daemon.status(http)
                waited = [r for r in body["reasons"] if r.startswith("a command has waited")]
                return body if waited else None

            body = await eventually(stuck, "/readyz to name the waiting command", 30)
            assert body["ready"] is False and body["outbox_depth"] >= 1
            assert any("max_pending_age_seconds = 1" in r for r in body["reasons"])
            rehearsal.cw.faults.api.clear()
            await live.reaches_connectwise(made["id"])
            assert (await daemon.ready(http, deadline_s=60))["reasons"] == []
            assert await daemon.stop() == 0
    finally:
        await daemon.stop()
        await rehearsal.stop()
