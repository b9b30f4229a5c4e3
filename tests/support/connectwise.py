"""Shared ConnectWise test fixtures: a live simulator on loopback, settings pointing
at it (keys in 0600 files), and socbridge's client connected to it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.intake import CallbackIntake
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.connectwise.signing import SigningKeyCache
from daemon.simulators.connectwise import SimServer, fixture
from eventstore import EventStore


def write_secret(path: Path, value: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return str(path)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer() as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path, sim: SimServer) -> Callable[..., ConnectWiseSettings]:
    def make(**overrides: Any) -> ConnectWiseSettings:
        doc: dict[str, Any] = {
            "site_url": sim.url,
            "company_id": fixture.LOGIN_COMPANY,
            "public_key": write_secret(tmp_path / "pub", fixture.API_PUBLIC_KEY),
            "private_key": write_secret(tmp_path / "priv", fixture.API_PRIVATE_KEY),
            "client_id": fixture.CLIENT_ID,
            "api_member": fixture.API_MEMBER,
            "source": "SOC Platform",
            "public_callback_url": "http://127.0.0.1:9/callbacks/connectwise",
            "requests_per_second": 200,
            "max_concurrency": 8,
            "timeout_seconds": 5,
            "max_attempts": 6,
            "max_retry_delay_seconds": 0.05,
        }
        doc.update(overrides)
        return ConnectWiseSettings.model_validate(doc)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., ConnectWiseSettings]) -> ConnectWiseSettings:
    return make_settings()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def cw(settings: ConnectWiseSettings, http: aiohttp.ClientSession) -> ConnectWiseClient:
    client = await ConnectWiseClient.connect(settings, settings.load_keys(), http)
    # Fast retries for tests: the policy's shape is tested in test_remote.py.
    client.remote.retry = client.remote.retry.__class__(
        max_attempts=6, base_delay=0.01, max_delay=0.05, max_retry_after=5
    )
    return client


@pytest.fixture
async def tech(sim: SimServer, http: aiohttp.ClientSession, tmp_path: Path) -> ConnectWiseClient:
    """A client logged in as the human technician (jsmith), who writes in the PSA."""
    tech_settings = ConnectWiseSettings.model_validate(
        {
            "site_url": sim.url,
            "company_id": fixture.LOGIN_COMPANY,
            "public_key": write_secret(tmp_path / "tpub", fixture.TECH_PUBLIC_KEY),
            "private_key": write_secret(tmp_path / "tpriv", fixture.TECH_PRIVATE_KEY),
            "client_id": fixture.CLIENT_ID,
            "api_member": fixture.TECH_MEMBER,
            "requests_per_second": 200,
        }
    )
    return await ConnectWiseClient.connect(tech_settings, tech_settings.load_keys(), http)


def callback_intake(
    store: EventStore,
    settings: ConnectWiseSettings,
    tenants: Mapping[int, str],
    http: aiohttp.ClientSession,
    keys: SigningKeyCache | None = None,
    kick: Callable[[int, str | None], None] | None = None,
) -> CallbackIntake:
    """The callback intake as the daemon builds it (keys fetched over ``http``)."""
    keys = keys or SigningKeyCache(
        http, client_id=settings.client_id, ttl=settings.signing_key_ttl_seconds
    )
    return CallbackIntake(store, settings, tenants, keys, kick)
