"""The console in a real Chromium, against the rehearsal: both simulators and the daemon.

Each test drives the pages as an operator would and checks the bridge's state
and log, not pixels; every page is saved as a screenshot under
``artifacts/console/`` (see :mod:`tests.support.browser`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.console.actions import SOURCE
from daemon.service.app import METRICS
from daemon.simulators.harness import Bridge
from daemon.simulators.soc import fixture as socfx
from projections import kinds
from tests.daemon.bridge.test_parked import parked, refuse_writes, two_linked
from tests.daemon.console.test_access import TOKEN, with_token
from tests.support.browser import Browser, require_browser
from tests.support.paths import REPO

URGENT = "Priority 1 - Emergency Response"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    b = Browser()
    try:
        yield b
    finally:
        await b.close()


def console(bridge: Bridge, path: str = "/") -> str:
    assert bridge.config is not None and bridge.config.admin is not None
    return f"http://127.0.0.1:{bridge.config.admin.port}{path}"


async def admin_events(bridge: Bridge, type_: str) -> list[dict[str, object]]:
    return [dict(e.data) async for e in bridge.store.read() if e.type == type_]


async def test_every_page_shows_the_rehearsal_and_a_routed_ticket_appears_in_links(
    bridge: Bridge, browser: Browser
) -> None:
    cw, _other, soc = await two_linked(bridge)
    await browser.get(console(bridge, "/links"))
    table = await browser.text("#links")
    assert f"#{cw['id']}" in table and f"#{soc['id']}" in table and "linked" in table
    await browser.screenshot("links")

    await browser.fill("input[name=q]", str(soc["id"]))
    await browser.submit(".search button")
    rows = await browser.text("#links tbody tr")
    assert f"#{soc['id']}" in rows and "1 link(s)" in await browser.text("main")

    await browser.submit(f"a[href='/tickets/cw:{cw['id']}']")
    timeline = await browser.text("#timeline")
    assert "ConnectWise" in timeline and "SOC" in timeline
    assert await browser.script("return document.querySelectorAll('#timeline a.cause').length")
    await browser.screenshot("ticket-timeline")

    await browser.get(console(bridge, "/"))
    assert "ConnectWise" in await browser.text("main") and "SOC desk" in await browser.text("main")
    assert "reachable" in await browser.text("main")
    await browser.screenshot("overview")
    await browser.get(console(bridge, "/config"))
    config = await browser.text("#config")
    assert "[connectwise]" in config and "secrets/soc_api_token" in config
    assert socfx.API_TOKEN not in await browser.text("body")  # the reference, not the secret
    assert "start" in await browser.text("#history")
    await browser.screenshot("config")


async def test_a_parked_command_is_retried_from_problems_and_shown_delivered(
    bridge: Bridge, browser: Browser
) -> None:
    cw, _other, soc = await two_linked(bridge)
    link_id = f"cw:{cw['id']}"
    refuse_writes(bridge, cw["id"])
    await bridge.analyst.set(soc["id"], priority="urgent")
    [held] = await bridge.until(lambda: parked(bridge, link_id), "the refused write to park")

    await browser.get(console(bridge, "/problems"))
    row = await browser.text(f"tr[data-command='{held.command_id}']")
    assert "parked" in row and "422" in row and f"ConnectWise #{cw['id']}" in row
    await browser.screenshot("problems-parked")
    await browser.get(console(bridge, "/"))
    assert "parked" in await browser.text("#verdict")

    assert bridge.rehearsal is not None
    bridge.rehearsal.cw.faults.api.clear()  # the PSA rule is fixed
    await browser.get(console(bridge, "/problems"))
    await browser.submit(f"tr[data-command='{held.command_id}'] button[value=retry]")
    assert "Retrying" in await browser.text(".flash")
    [retried] = await admin_events(bridge, kinds.COMMAND_RETRIED)
    assert retried["command_id"] == held.command_id and retried["operator"] == "local"

    async def delivered() -> bool:
        await browser.get(console(bridge, "/problems"))
        return "delivered" in await browser.text("#recent")

    await bridge.until(delivered, "the page to show the retried command delivered")
    ticket = await bridge.technician.ticket(cw["id"])
    assert ticket["priority"]["name"] == URGENT
    assert "Nothing needs you" in await browser.text("main")
    await browser.screenshot("problems-retried")


async def test_switching_a_tenant_off_from_the_page_stops_its_sync(
    bridge: Bridge, browser: Browser
) -> None:
    cw, _other, soc = await two_linked(bridge)
    tenant = bridge.engine.state.links[f"cw:{cw['id']}"].tenant
    await browser.get(console(bridge, "/tenants"))
    await browser.screenshot("tenants")
    await browser.submit(f"tr[data-tenant='{tenant}'] button")
    assert f"Sync for {tenant} is now off" in await browser.text(".flash")
    assert (await browser.text(f"tr[data-tenant='{tenant}'] .sync")) == "off"
    [switch] = await admin_events(bridge, kinds.TENANT_SYNC_DISABLED)
    assert switch["tenant"] == tenant and switch["operator"] == "local"
    await bridge.until(
        lambda: _false(bridge.engine.tenant_enabled(tenant)), "the engine to fold the switch"
    )

    # A change made now is not carried over: two full ConnectWise passes later, the SOC
    # ticket still has its old priority and no command was issued for it.
    before = (await bridge.analyst.ticket(soc["id"]))["priority"]
    await bridge.technician.set(cw["id"], priority=URGENT)
    issued = len(bridge.engine.state.outbox)
    metrics = bridge.app
    passes = metrics[METRICS].last_reconciliation.get("cw", 0.0)

    async def two_passes() -> bool:
        return metrics[METRICS].last_reconciliation.get("cw", 0.0) > passes

    await bridge.until(two_passes, "a ConnectWise reconciliation pass")
    passes = metrics[METRICS].last_reconciliation["cw"]
    await bridge.until(two_passes, "a second ConnectWise reconciliation pass")
    assert (await bridge.analyst.ticket(soc["id"]))["priority"] == before
    assert len(bridge.engine.state.outbox) == issued


async def _false(value: bool) -> bool:
    return not value


async def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(
    bridge: Bridge, browser: Browser
) -> None:
    await two_linked(bridge)
    await browser.get(console(bridge, "/tenants"))
    # The form as another site would post it: everything but the token.
    await browser.script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    await browser.submit("#tenants button")
    assert "403 Forbidden" in await browser.text("body")
    await browser.screenshot("csrf-refused")
    assert not [e async for e in bridge.store.read() if e.source == SOURCE]
    assert all(bridge.engine.tenant_enabled(t.name) or not t.sync_enabled
               for t in bridge.config.tenants)  # fmt: skip


async def test_the_demo_ends_with_a_console_that_shows_its_links_and_abandoned_reply(
    tmp_path: Path, browser: Browser
) -> None:
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "demo", "--serve", "--console-port", "0",
        "--keep", str(tmp_path / "run"),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert demo.stdout is not None
    try:
        url = None
        async with asyncio.timeout(180):
            while url is None:
                line = (await demo.stdout.readline()).decode()
                assert line, "the demo ended before printing the console's address"
                if line.startswith("console: "):
                    url = line.removeprefix("console: ").strip()
        await browser.get(url + "links")
        assert "linked" in await browser.text("#links") and "unlinked" in await browser.text(
            "#links"
        )
        await browser.screenshot("demo-links")
        await browser.get(url + "problems")
        rows = await browser.text("#problems")
        assert "abandoned: add a note to ConnectWise: 'Is the host isolated yet?'" in rows
        assert "link was unlinked" in rows
        await browser.screenshot("demo-problems")
        await browser.get(url)
        await browser.screenshot("demo-overview")
    finally:
        demo.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(demo.wait(), 30) == 0


async def test_with_a_token_the_login_form_lets_its_owner_in(
    bridge: Bridge, browser: Browser, tmp_path: Path
) -> None:
    await with_token(bridge, tmp_path)
    await browser.get(console(bridge, "/problems"))
    assert (await browser.url()).endswith("/login?next=/problems")
    await browser.fill("input[name=token]", "not-the-token-at-all")
    await browser.submit("form button")
    assert "That token is not valid." in await browser.text(".flash")
    await browser.screenshot("login")
    await browser.fill("input[name=token]", TOKEN)
    await browser.submit("form button")
    assert (await browser.url()).endswith("/problems")
    assert "alice" in await browser.text("header .who")
    await browser.submit("header form button")  # log out
    assert (await browser.url()).endswith("/login")
