"""The listener under connection pressure: 1100 idle connections against an open-file limit
of 1024. Connections that send no request in time are closed, so a real request is still
answered; asyncio's failed accepts are logged at most once a second, not thousands."""

from __future__ import annotations

import asyncio
import json
import resource
import selectors
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from daemon.simulators.rehearsal import start_rehearsal
from tests.support.paths import REPO
from tests.support.process import DaemonProcess, eventually

pytestmark = pytest.mark.slow

HELD = 1100


def _hold(host: str, port: int, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        sock = socket.socket()
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except OSError:  # the backlog is full: the kernel stops completing handshakes
            sock.close()
            continue
        held.append(sock)
    return held


async def test_idle_connections_past_the_fd_limit_do_not_starve_the_listener(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < HELD + 200:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, tmp_path / "socbridge.toml", None, poll_s=0.5, export_lag=0.1
    )
    config = rehearsal.config_path
    config.write_text(
        config.read_text().replace("[server]\n", "[server]\nheader_timeout_seconds = 5\n", 1)
    )
    log_path = tmp_path / "daemon.log"
    held: list[socket.socket] = []
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            "prlimit", "--nofile=1024:1024", sys.executable, "-m", "daemon", "run",
            "--config", str(config), cwd=REPO, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            url = rehearsal.daemon_url

            async def ready() -> bool:
                assert proc.returncode is None, log_path.read_text()[-2000:]
                try:
                    async with http.get(f"{url}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, "the daemon to be ready", 60)
            host, port = url.removeprefix("http://").rsplit(":", 1)
            held = await asyncio.to_thread(_hold, host, int(port), HELD)
            assert len(held) > 1024 - 100  # enough to exhaust the daemon's descriptors
            started = time.monotonic()
            timeout = aiohttp.ClientTimeout(total=15)
            async with aiohttp.ClientSession(timeout=timeout) as fresh:
                async with fresh.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
            answered_s = time.monotonic() - started
            assert answered_s < 15
        text = log_path.read_text(errors="replace")
        assert len(text.encode()) < 1_000_000
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        failed = [line for line in lines if line["event"] == "listener.accept_failed"]
        # Out of descriptors for a while: said about once a second, with the count.
        assert failed and all(line["count"] >= 1 for line in failed), (len(held), text[-3000:])
        assert len(failed) <= answered_s + 5
        assert "Traceback" not in text
    finally:
        for sock in held:
            sock.close()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        await rehearsal.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _answers(socks: list[socket.socket], within_s: float) -> dict[int, bytes]:
    """What each socket received within ``within_s`` (by index); silent ones are absent."""
    got: dict[int, bytes] = {}
    deadline = time.monotonic() + within_s
    with selectors.DefaultSelector() as sel:
        for n, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, n)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    got[key.data] = sock.recv(300)
                except OSError:
                    got[key.data] = b""
                sel.unregister(sock)
    return got


async def test_connections_past_the_cap_are_refused_politely(tmp_path: Path) -> None:
    """Past ``max_connections`` a new connection gets a whole 503 with Retry-After and is
    closed, with one log line a second; once connections close, requests are served."""
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, tmp_path / "socbridge.toml", None, poll_s=0.5, export_lag=0.1
    )
    config = rehearsal.config_path
    config.write_text(
        config.read_text().replace(
            "[server]\n", "[server]\nmax_connections = 20\nheader_timeout_seconds = 30\n", 1
        )
    )
    daemon = DaemonProcess(config, rehearsal.daemon_url, tmp_path / "daemon.log")
    held: list[socket.socket] = []
    try:
        async with aiohttp.ClientSession() as http:
            await daemon.start()
            await daemon.ready(http)
            host, port = rehearsal.daemon_url.removeprefix("http://").rsplit(":", 1)
            held = await asyncio.to_thread(_hold, host, int(port), 30)
            answers = await asyncio.to_thread(_answers, held, 10.0)
            refused = [a for a in answers.values() if a.startswith(b"HTTP/1.1 503")]
            # Past the cap each gets a whole 503; the ones under it wait for their request.
            assert refused, answers
            assert len(held) - len(refused) <= 20
            assert all(b"Retry-After: 5" in a and b"too many open connections" in a
                       for a in refused)  # fmt: skip
            assert set(answers.values()) <= set(refused)  # nothing else was said or closed
            for sock in held:
                sock.close()
            held = []

            async def served() -> bool:
                try:
                    async with http.get(f"{rehearsal.daemon_url}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(served, "a request once the connections closed", 15)
        lines = [json.loads(line) for line in daemon.log_path.read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        refused = [line for line in lines if line["event"] == "listener.connections_refused"]
        assert refused and refused[0]["limit"] == 20
    finally:
        for sock in held:
            sock.close()
        await daemon.stop()
        await rehearsal.stop()
