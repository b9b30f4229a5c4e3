"""What the console's buttons append, and what the audit and the outbox make of it.

Against the daemon and both simulators, over HTTP with the page's CSRF token, as a
browser posts the forms (the browser tests drive the same forms in Chromium)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import aiohttp

from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.harness import Bridge
from projections import kinds
from tests.daemon.bridge.test_parked import audited, parked, refuse_writes, two_linked
from tests.daemon.console.test_access import csrf_of


class Operator:
    """A browser session on the console: reads pages, posts their forms."""

    def __init__(self, bridge: Bridge, http: aiohttp.ClientSession) -> None:
        assert bridge.console_url is not None
        self.url, self.http = bridge.console_url.rstrip("/"), http

    async def page(self, path: str) -> str:
        async with self.http.get(self.url + path) as resp:
            assert resp.status == 200, path
            return await resp.text()

    async def post(self, path: str, **form: str) -> str:
        csrf = csrf_of(await self.page("/tenants"))  # a page that always has a form
        async with self.http.post(self.url + path, data={"csrf": csrf, **form}) as resp:
            assert resp.status == 200, path
            return html.unescape(await resp.text())


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def events_of(bridge: Bridge, type_: str) -> list[dict[str, Any]]:
    return [dict(e.data) async for e in bridge.store.read() if e.type == type_]


async def abandoned_reply(bridge: Bridge) -> tuple[str, str]:
    """A SOC reply still waiting for ConnectWise when the ticket is unlinked (as the demo)."""
    cw, _other, soc = await two_linked(bridge)
    assert bridge.rehearsal is not None
    outage = ApiFault(503, 1_000_000, method="POST", path_contains=f"tickets/{cw['id']}/notes")
    bridge.rehearsal.cw.faults.api.append(outage)
    await bridge.analyst.comment(soc["id"], "Is the host isolated yet?")

    async def failed_once() -> bool:
        return any(c.attempts > 0 for c in bridge.engine.state.outbox.values())

    await bridge.until(failed_once, "the reply to fail once")
    await bridge.technician.set(cw["id"], status="Unlinked")
    bridge.rehearsal.cw.faults.api.remove(outage)

    async def abandoned() -> list[str]:
        return list(bridge.engine.state.abandoned)

    [command_id] = await bridge.until(abandoned, "the reply to be abandoned")
    return command_id, f"cw:{cw['id']}"


async def test_retry_of_an_abandoned_reply_records_who_and_the_audits_answer(
    bridge: Bridge,
) -> None:
    command_id, link_id = await abandoned_reply(bridge)
    assert "command-abandoned" in [f["kind"] for f in (await audited(bridge))["findings"]]
    async with session() as http:
        operator = Operator(bridge, http)
        assert command_id in await operator.page("/problems")
        page = await operator.post("/commands/retry", command_id=command_id, link_id=link_id)
        assert "Retried: cw.add_note abandoned (link was unlinked): the link is unlinked" in page
        [retried] = await events_of(bridge, kinds.COMMAND_RETRIED)
        assert retried["command_id"] == command_id and retried["operator"] == "local"
        [repair] = await events_of(bridge, kinds.REPAIR_DECIDED)
        assert repair["repair"] == "acknowledge" and repair["command_id"] == command_id
        # Answered: no longer a problem, and the audit counts it repaired.
        await bridge.until(
            lambda: _not_in(command_id, operator.page("/problems")), "Problems to drop it"
        )
    kinds_found = [f["kind"] for f in (await audited(bridge))["findings"]]
    assert "command-abandoned" not in kinds_found and "command-repaired" in kinds_found


async def _not_in(text: str, page: Any) -> bool:
    return text not in await page


async def test_skip_of_a_parked_write_lets_the_ones_behind_it_go(bridge: Bridge) -> None:
    cw, _other, soc = await two_linked(bridge)
    link_id = f"cw:{cw['id']}"
    faults = refuse_writes(bridge, cw["id"])
    await bridge.analyst.set(soc["id"], priority="urgent")
    [held] = await bridge.until(lambda: parked(bridge, link_id), "the write to park")
    async with session() as http:
        operator = Operator(bridge, http)
        for fault in faults:
            assert bridge.rehearsal is not None
            bridge.rehearsal.cw.faults.api.remove(fault)
        await bridge.analyst.comment(soc["id"], "Waiting behind the parked write")
        page = await operator.post("/commands/skip", command_id=held.command_id, link_id=link_id)
        assert "Skipped: write priority 'urgent' to ConnectWise" in page
        [skipped] = await events_of(bridge, kinds.COMMAND_SKIPPED)
        assert skipped["command_id"] == held.command_id and skipped["operator"] == "local"

        async def reply_landed() -> bool:
            notes = await bridge.technician.notes(cw["id"])
            return any("Waiting behind the parked write" in n["text"] for n in notes)

        await bridge.until(reply_landed, "the note behind the skipped write to land")
        assert "skipped" in await operator.page("/problems")  # recent actions: its outcome


async def test_reread_both_sides_finds_changes_whose_callbacks_were_lost(
    tmp_path: Path,
) -> None:
    # Polls every 5 minutes: within the test only a callback or a re-read sees a change.
    async with Bridge(tmp_path, poll_s=300) as bridge:
        cw, _other, soc = await two_linked(bridge)
        link_id = f"cw:{cw['id']}"
        assert bridge.rehearsal is not None
        bridge.rehearsal.cw.faults.drop_callbacks = 1  # the change's callback never comes
        await bridge.technician.set(cw["id"], priority="Priority 1 - Emergency Response")
        assert (await bridge.analyst.ticket(soc["id"]))["priority"] != "urgent"
        async with session() as http:
            page = await Operator(bridge, http).post(
                "/commands/reread", link_id=link_id, back=f"/tickets/{link_id}"
            )
        assert f"Reading both tickets of {link_id} again." in page and "Ticket timeline" in page
        [asked] = await events_of(bridge, kinds.LINK_REREAD)
        assert asked == {
            "link_id": link_id, "operator": "local", "cw_id": cw["id"], "soc_id": soc["id"]
        }  # fmt: skip

        async def synced() -> bool:
            return bool((await bridge.analyst.ticket(soc["id"]))["priority"] == "urgent")

        await bridge.until(synced, "the change the re-read found to reach the SOC")
