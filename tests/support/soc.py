"""Shared SOC test fixtures: the simulator on loopback, a real event log, settings
with a real token file, and the daemon's webhook route on its own port."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.intake import ROUTE as WEBHOOK_ROUTE
from daemon.connectors.soc.intake import WebhookIntake
from daemon.connectors.soc.settings import SocSettings, SocWebhookSettings
from daemon.simulators.soc import SocSimulator, fixture
from eventstore import EventStore, utc_now

TENANTS = {9001: "acme", 9002: "globex"}


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
async def sim() -> AsyncIterator[SocSimulator]:
    async with SocSimulator(export_lag=0, webhook_retry_delay=0.01) as s:
        yield s


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(tmp_path / "events.db")
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def daemon_socket() -> Iterator[socket.socket]:
    """A bound loopback socket for the daemon, so its URL is known up front."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def make_settings(sim_url: str, tmp_path: Path, public_url: str, **overrides: Any) -> SocSettings:
    token = write_secret(tmp_path / "soc-token", fixture.API_TOKEN)
    base: dict[str, Any] = {
        "url": sim_url,
        "email": fixture.API_EMAIL,
        "api_token": str(token),
        "requests_per_second": 1000,
        "max_concurrency": 8,
        "timeout_seconds": 5,
        "backoff_base_seconds": 0.01,
        "poll_lookback_seconds": 3600,
        "webhook": SocWebhookSettings(
            public_url=public_url, signing_secret=str(tmp_path / "secrets" / "soc-webhook")
        ),
    }
    base.update(overrides)
    return SocSettings(**base)


@pytest.fixture
def settings(sim: SocSimulator, tmp_path: Path, daemon_socket: socket.socket) -> SocSettings:
    port = daemon_socket.getsockname()[1]
    return make_settings(sim.url, tmp_path, f"http://127.0.0.1:{port}{WEBHOOK_ROUTE}")


@pytest.fixture
async def client(settings: SocSettings) -> AsyncIterator[SocClient]:
    async with SocClient.from_settings(settings, settings.load_token()) as c:
        yield c


@pytest.fixture
async def daemon(
    store: EventStore, settings: SocSettings, daemon_socket: socket.socket
) -> AsyncIterator[str]:
    """The daemon's webhook route served on the bound socket; yields its URL."""
    app = web.Application()
    app.router.add_post(WEBHOOK_ROUTE, WebhookIntake(store, settings, TENANTS, utc_now).handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, daemon_socket)
    await site.start()
    try:
        yield settings.webhook.public_url
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
