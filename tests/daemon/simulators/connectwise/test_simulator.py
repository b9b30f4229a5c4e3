"""Simulator behaviour beyond what the client tests cover: callbacks, faults,
paging and auth edges, the admin endpoints and the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.simulators.connectwise import SimServer, fixture
from daemon.simulators.connectwise.faults import FaultConfigError, parse_api_fault

API = f"/{fixture.CODEBASE}apis/3.0"


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], bytes, str]] = []
        self.url = ""


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        rec.received.append((orjson.loads(raw), raw, request.headers["x-content-signature"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/cb"
    yield rec
    await runner.cleanup()


def ticket_body(company: int = 250, board: int = fixture.BOARD_ID) -> dict[str, Any]:
    return {"summary": "Alert", "company": {"id": company}, "board": {"id": board}}


async def test_callbacks_are_signed_with_writer_and_levels(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, receiver: Receiver
) -> None:
    await cw.create_callback(
        {"url": receiver.url, "objectId": 1, "type": "ticket", "level": "owner"}
    )
    t = await tech.create_ticket(ticket_body(board=1))  # owner level: every board
    await cw.create_note(t["id"], "hello", "Discussion")  # a note is a ticket update
    await tech.remote.request("DELETE", f"service/tickets/{t['id']}")
    await sim.callbacks.drain()
    docs = [doc for doc, _, _ in receiver.received]
    assert [(d["Action"], d["MemberId"]) for d in docs] == [
        ("added", "jsmith"), ("updated", "socbridge"), ("deleted", "jsmith"),
    ]  # fmt: skip
    assert docs[2]["Entity"] is None and orjson.loads(docs[0]["Entity"])["id"] == t["id"]
    assert docs[0]["CompanyId"] == fixture.LOGIN_COMPANY and docs[0]["Type"] == "ticket"
    assert "//system/callbackkey/index.rails?companyName=" in docs[0]["Metadata"]["key_url"]
    async with aiohttp.ClientSession() as http:
        async with http.get(docs[0]["Metadata"]["key_url"]) as resp:
            key = (await resp.json())["signing_key"]
    for _, raw, signature in receiver.received:
        digest = hmac.new(hashlib.sha256(key.encode()).digest(), raw, hashlib.sha256).digest()
        assert base64.b64encode(digest).decode() == signature


async def test_board_level_and_suppression(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, receiver: Receiver
) -> None:
    entry = {"url": receiver.url, "objectId": fixture.BOARD_ID, "type": "ticket",
             "level": "board", "isSelfSuppressedFlag": True}  # fmt: skip
    await cw.create_callback(entry)
    await tech.create_ticket(ticket_body(board=1))  # other board: no callback
    t = await tech.create_ticket(ticket_body())  # callback
    await cw.update_ticket(t["id"], {"summary": "by socbridge"})  # self-suppressed
    await tech.patch(f"service/tickets/{t['id']}", [
        {"op": "replace", "path": "/summary", "value": "quiet"},
        {"op": "replace", "path": "/skipCallback", "value": True},
    ])  # fmt: skip
    await sim.callbacks.drain()
    assert [doc["Action"] for doc, _, _ in receiver.received] == ["added"]


async def test_drop_and_reorder_faults(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, receiver: Receiver
) -> None:
    await cw.create_callback(
        {"url": receiver.url, "objectId": 1, "type": "ticket", "level": "owner"}
    )
    sim.faults.update({"drop_callbacks": 1})
    dropped = await tech.create_ticket({**ticket_body(), "summary": "dropped"})
    sim.faults.update({"reorder_callbacks": 1})
    first = await tech.create_ticket({**ticket_body(), "summary": "first"})
    second = await tech.create_ticket({**ticket_body(), "summary": "second"})
    await sim.callbacks.drain()
    assert [doc["ID"] for doc, _, _ in receiver.received] == [second["id"], first["id"]]
    assert any(
        d.error == "dropped" and d.ticket_id == dropped["id"] for d in sim.callbacks.deliveries
    )


async def test_paging_edges_and_count(sim: SimServer, cw: ConnectWiseClient) -> None:
    for _ in range(5):
        await cw.create_ticket(ticket_body())
    first = await cw.remote.request("GET", "service/tickets", params={"pageSize": 2, "page": 1})
    link = first.headers["Link"]
    assert 'pageSize=2&page=2>; rel="next"' in link and 'page=3>; rel="last"' in link
    last = await cw.remote.request("GET", "service/tickets", params={"pageSize": 2, "page": 3})
    assert 'rel="next"' not in last.headers["Link"] and len(last.json()) == 1
    ids = sorted(sim.state.tickets)
    after = await cw.remote.request("GET", "service/tickets", params={"pageId": ids[2]})
    assert [t["id"] for t in after.json()] == ids[3:]
    assert await cw.count("service/tickets", f"id > {ids[0]}") == 4
    from daemon.connectors.connectwise.errors import BadRequestError

    with pytest.raises(BadRequestError):
        await cw.remote.request("GET", "service/tickets", params={"page": "zero"})
    with pytest.raises(BadRequestError, match="conditions"):
        await cw.remote.request("GET", "service/tickets", params={"conditions": "id =="})


async def test_auth_and_unknown_endpoints(sim: SimServer, http: aiohttp.ClientSession) -> None:
    token = base64.b64encode(
        f"{fixture.LOGIN_COMPANY}+{fixture.API_PUBLIC_KEY}:{fixture.API_PRIVATE_KEY}".encode()
    ).decode()
    good = {"Authorization": f"Basic {token}", "clientId": fixture.CLIENT_ID}
    async with http.get(
        f"{sim.url}{API}/system/info", headers={"Authorization": good["Authorization"]}
    ) as r:
        assert r.status == 401  # clientId missing
    async with http.get(
        f"{sim.url}{API}/system/info", headers={**good, "Authorization": "Basic !!"}
    ) as r:
        assert r.status == 401
    async with http.get(f"{sim.url}{API}/nothing/here", headers=good) as r:
        assert (r.status, await r.json()) == (
            404, {"code": "ConnectWiseApi", "message": "The endpoint does not exist."},
        )  # fmt: skip
    async with http.put(f"{sim.url}{API}/service/tickets", headers=good) as r:
        assert r.status == 405
    async with http.get(f"{sim.url}/login/companyinfo/nobody") as r:
        assert await r.read() == b"null"


async def test_admin_faults_and_permissions_endpoints(
    sim: SimServer, cw: ConnectWiseClient, http: aiohttp.ClientSession
) -> None:
    faults = {"api": [{"status": 503, "count": 2}], "latency": 0}
    async with http.post(f"{sim.url}/_sim/faults", json=faults) as r:
        assert r.status == 200 and (await r.json())["api"][0]["count"] == 2
    before = cw.remote.attempts_made
    await cw.get("system/info")
    assert cw.remote.attempts_made - before == 3  # two 503s, then success
    async with http.post(f"{sim.url}/_sim/faults", json={"bogus": 1}) as r:
        assert r.status == 400 and "bogus" in (await r.json())["message"]
    async with http.put(f"{sim.url}/_sim/roles/31/permissions", json={
        "module": "Companies", "function": "Company Maintenance", "levels": None,
    }) as r:  # fmt: skip
        assert r.status == 200
    assert ("Companies", "Company Maintenance") not in sim.state.roles[31].permissions
    async with http.delete(f"{sim.url}/_sim/faults") as r:
        assert (await r.json())["api"] == []


def test_fault_spec_parsing() -> None:
    rule = parse_api_fault("429x3:2")
    assert (rule.status, rule.count, rule.retry_after) == (429, 3, "2")
    with pytest.raises(FaultConfigError):
        parse_api_fault("lots")


async def test_sim_cli_serves_and_writes_private_keys(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "sim", "connectwise", "--port", "0",
        "--fail", "429x1:0", "--write-keys", str(tmp_path / "keys"),
        "--remove-permission", "Service Desk/Service Tickets",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()  # type: ignore[union-attr]
        assert line.startswith("ConnectWise simulator at http://127.0.0.1:"), line
        url = line.split()[3]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/login/companyinfo/{fixture.LOGIN_COMPANY}") as r:
                assert (await r.json())["Codebase"] == fixture.CODEBASE
            async with http.get(f"{url}{API}/system/info") as r:
                assert r.status == 429  # the --fail flag took effect
            token = base64.b64encode(f"{fixture.LOGIN_COMPANY}+{fixture.API_PUBLIC_KEY}:"
                                     f"{fixture.API_PRIVATE_KEY}".encode()).decode()  # fmt: skip
            auth = {"Authorization": f"Basic {token}", "clientId": fixture.CLIENT_ID}
            async with http.get(f"{url}{API}/service/tickets", headers=auth) as r:
                assert r.status == 403  # --remove-permission took effect
        key = tmp_path / "keys" / "cw_private_key"
        assert key.read_text().strip() == fixture.API_PRIVATE_KEY
        assert key.stat().st_mode & 0o077 == 0
        assert fixture.API_PRIVATE_KEY not in line
    finally:
        proc.terminate()
        await proc.wait()


async def test_callback_entry_update_keeps_identity_and_revalidates(
    sim: SimServer, cw: ConnectWiseClient
) -> None:
    from daemon.connectors.connectwise.errors import BadRequestError

    entry = await cw.create_callback(
        {"url": "https://a.example/cb", "objectId": 41, "type": "ticket", "level": "board"}
    )
    path = f"system/callbacks/{entry['id']}"
    out = await cw.patch(path, [{"op": "replace", "path": "/inactiveFlag", "value": True}])
    assert out["inactiveFlag"] is True and out["connectWiseID"] == entry["connectWiseID"]
    with pytest.raises(BadRequestError) as ei:
        await cw.patch(path, [{"op": "replace", "path": "/url", "value": "not a url"}])
    assert ei.value.fields == ("url",)
    assert (await cw.get(path))["url"] == "https://a.example/cb"  # refused: unchanged


async def test_latency_fault_makes_the_client_time_out_then_recover(
    sim: SimServer, cw: ConnectWiseClient
) -> None:
    from daemon.connectors.contract import RemoteUnavailableError
    from daemon.connectors.remote import Limits, RetryPolicy

    cw.remote.limits = Limits(rate_per_second=100, max_concurrency=2, timeout=0.1)
    cw.remote.retry = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
    sim.faults.update({"latency": 0.3})
    with pytest.raises(RemoteUnavailableError, match="timed out"):
        await cw.get("system/info")
    sim.faults.update({"latency": 0})
    assert "version" in await cw.get("system/info")
