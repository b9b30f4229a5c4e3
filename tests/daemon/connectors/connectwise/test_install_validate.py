"""Callback installation and connection validation against the simulator."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from daemon.cli.callbacks import run_callbacks, run_validate
from daemon.connectors.connectwise import install
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.permissions import GUIDE_PERMISSIONS, GUIDE_TABLE_SETUP
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.simulators.connectwise import SimServer, fixture

URL = "https://socbridge.msp.example/callbacks/connectwise"


async def test_install_is_idempotent_and_remove_deletes(
    sim: SimServer, cw: ConnectWiseClient, make_settings: Callable[..., ConnectWiseSettings]
) -> None:
    settings = make_settings(public_callback_url=URL)
    first = await install.install(cw, settings)
    assert first.action == "installed"
    entry = first.entries[0]
    assert (entry["type"], entry["level"], entry["objectId"], entry["url"]) == (
        "ticket", "board", fixture.BOARD_ID, URL,
    )  # fmt: skip
    again = await install.install(cw, settings)
    assert again.action == "unchanged" and len(sim.state.callbacks) == 1
    assert (await install.status(cw, settings)).action == "present"
    gone = await install.remove(cw, settings)
    assert gone.action == "removed" and sim.state.callbacks == {}
    assert (await install.remove(cw, settings)).action == "absent"
    assert (await install.status(cw, settings)).action == "absent"


async def test_install_replaces_a_stale_entry(
    sim: SimServer, cw: ConnectWiseClient, make_settings: Callable[..., ConnectWiseSettings]
) -> None:
    await cw.create_callback({"url": URL, "objectId": 1, "type": "ticket", "level": "board"})
    settings = make_settings(public_callback_url=URL)
    assert (await install.status(cw, settings)).action == "stale"
    result = await install.install(cw, settings)
    assert result.action == "replaced" and len(result.removed) == 1
    assert [e["objectId"] for e in sim.state.callbacks.values()] == [fixture.BOARD_ID]


async def test_callbacks_cli_output_and_exit_codes(
    sim: SimServer, make_settings: Callable[..., ConnectWiseSettings]
) -> None:
    settings = make_settings(public_callback_url=URL)
    out = io.StringIO()
    assert await run_callbacks(settings, "status", out) == 1
    assert await run_callbacks(settings, "install", out) == 0
    assert await run_callbacks(settings, "status", out) == 0
    assert "installed" in out.getvalue() and fixture.API_PRIVATE_KEY not in out.getvalue()
    no_url = make_settings(public_callback_url=None)
    assert await run_callbacks(no_url, "install", io.StringIO()) == 2


async def test_validate_passes_on_the_fixture(
    sim: SimServer, settings: ConnectWiseSettings
) -> None:
    out = io.StringIO()
    assert await run_validate(settings, out) == 0, out.getvalue()
    text = out.getvalue()
    assert "FAIL" not in text
    assert text.count("PASS  permission ") == len(GUIDE_PERMISSIONS)
    assert "PASS  routing status 'Send to SOC'" in text


@pytest.mark.parametrize("permission", sorted(GUIDE_PERMISSIONS))
async def test_validate_names_each_missing_permission(
    sim: SimServer, settings: ConnectWiseSettings, permission: tuple[str, str]
) -> None:
    del sim.state.roles[31].permissions[permission]
    out = io.StringIO()
    assert await run_validate(settings, out) == 1
    module, function = permission
    text = out.getvalue()
    assert f"FAIL  permission {module} / {function}" in text
    assert f"fix: System > Security Roles > SOC Integration > {module} > {function}" in text
    assert text.count("FAIL  permission") == 1


async def test_validate_names_a_level_below_all(
    sim: SimServer, settings: ConnectWiseSettings
) -> None:
    sim.state.roles[31].permissions[("Service Desk", "Service Tickets")] = (
        "All",
        "My",
        "None",
        "All",
    )
    out = io.StringIO()
    assert await run_validate(settings, out) == 1
    assert "Service Desk / Service Tickets: Edit My (needs All)" in out.getvalue()


@pytest.mark.parametrize("entry", sorted(GUIDE_TABLE_SETUP))
async def test_validate_names_each_disallowed_table(
    sim: SimServer, settings: ConnectWiseSettings, entry: str
) -> None:
    sim.state.roles[31].table_setup.discard(entry)
    out = io.StringIO()
    assert await run_validate(settings, out) == 1
    assert f"FAIL  Table Setup access {entry}" in out.getvalue()


async def test_validate_reports_config_that_does_not_match_connectwise(
    sim: SimServer, make_settings: Callable[..., ConnectWiseSettings]
) -> None:
    settings = make_settings(
        routing_status="Escalate", source="Carrier Pigeon",
        priority_mapping={"urgent": "P0", "high": "Priority 2 - Quick Response",
                          "normal": "Priority 3 - Normal Response",
                          "low": "Priority 4 - Schedule Maintenance"},
    )  # fmt: skip
    out = io.StringIO()
    assert await run_validate(settings, out) == 1
    text = out.getvalue()
    assert "FAIL  routing status 'Escalate'" in text
    assert "FAIL  source 'Carrier Pigeon'" in text
    assert "FAIL  priority mapping: missing urgent->'P0'" in text
    assert "PASS  solved status 'Solved'" in text


async def test_validate_bad_keys_and_bad_company(
    sim: SimServer, make_settings: Callable[..., ConnectWiseSettings], tmp_path
) -> None:
    from tests.support.connectwise import write_secret

    out = io.StringIO()
    bad = make_settings(private_key=write_secret(tmp_path / "bad", "nope-not-the-key"))
    assert await run_validate(bad, out) == 1
    assert "FAIL  API keys and clientId" in out.getvalue()
    assert "nope-not-the-key" not in out.getvalue()
    out = io.StringIO()
    assert await run_validate(make_settings(company_id="someoneelse"), out) == 1
    assert "FAIL  ConnectWise URL and company identifier" in out.getvalue()
