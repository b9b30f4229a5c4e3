"""``socbridge run`` as systemd runs it: READY via NOTIFY_SOCKET, SIGTERM exits 0, over TLS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp

from daemon.service.config import load_config
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.harness import Analyst
from daemon.simulators.rehearsal import start_rehearsal
from daemon.simulators.soc import fixture as socfx


async def test_ready_then_sigterm_exits_0_over_tls_with_simulators_delivering(
    tmp_path: Path,
) -> None:
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, tmp_path / "socbridge.toml", None, poll_s=0.5, tls=True
    )
    config = load_config(rehearsal.config_path)
    assert rehearsal.daemon_url.startswith("https://") and config.server.tls_cert
    assert config.connectwise.public_callback_url.startswith("https://")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="200000")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "run", "--config", str(rehearsal.config_path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        message = b""
        while not message.startswith(b"READY=1"):  # watchdog pings may come first
            message = await asyncio.wait_for(loop.sock_recv(notify, 4096), 30)
        # The SOC simulator delivers a webhook over TLS (it trusts the rehearsal CA).
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            await Analyst(http, rehearsal.soc.url).create_ticket("TLS path", "over https")

            async def delivered() -> bool:
                return any(
                    d.outcome == "delivered 200" for d in rehearsal.soc.dispatcher.deliveries
                )

            while not await delivered():
                await asyncio.wait_for(loop.sock_recv(notify, 4096), 10)  # watchdog ticks
            async with http.get(rehearsal.daemon_url + "/readyz") as r:
                assert r.status == 200
            # systemctl reload (SIGHUP) re-reads the config, telling systemd RELOADING=1
            # then READY=1 (watchdog pings may come between), and does not kill the daemon.
            proc.send_signal(signal.SIGHUP)
            said = []
            for expected in (b"RELOADING=1", b"READY=1"):
                message = b""
                while not message.startswith(expected):
                    message = await asyncio.wait_for(loop.sock_recv(notify, 4096), 10)
                said.append(message)
            assert b"MONOTONIC_USEC=" in said[0] and b"STATUS=serving" in said[1]
            async with http.get(rehearsal.daemon_url + "/readyz") as r:
                assert r.status == 200
            assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()
        await rehearsal.stop()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert {"daemon.listening", "config.reloaded", "daemon.stopping"} <= events
    text = out.decode() + err.decode()
    for secret in (cwfx.API_PUBLIC_KEY, cwfx.API_PRIVATE_KEY, socfx.API_TOKEN):
        assert secret not in text
