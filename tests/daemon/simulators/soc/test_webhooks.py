"""The simulator's signed deliveries, seen by a bare receiver (not socbridge's intake)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.errors import SocNotFoundError
from daemon.connectors.soc.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from daemon.service.secrets import Secret
from daemon.simulators.soc import SocSimulator, fixture


class Receiver:
    """Records every delivery; answers ``fail_first`` of them with 500."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        return web.Response(status=200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    yield rec
    await runner.cleanup()


async def subscribe(client: SocClient, url: str, *kinds: str) -> tuple[str, Secret]:
    hook = await client.create_webhook(
        {
            "name": "probe",
            "endpoint": url,
            "http_method": "POST",
            "request_format": "json",
            "status": "active",
            "subscriptions": [f"zen:event-type:ticket.{k}" for k in kinds],
        }
    )
    return hook["id"], await client.signing_secret(hook["id"])


async def test_deliveries_are_signed_real_envelopes_for_subscribed_types_only(
    sim: SocSimulator, client: SocClient, receiver: Receiver
) -> None:
    wid, secret = await subscribe(client, receiver.url, "status_changed", "comment_added")
    t = await client.create_ticket(subject="S", body="b", organization_id=9001, priority="low")
    await client.set_status(t["id"], "solved")
    await client.set_priority(t["id"], "high")  # not subscribed
    await client.add_comment(t["id"], "done", public=True)
    await sim.dispatcher.drain()
    bodies = [orjson.loads(b) for _, b in receiver.requests]
    assert [b["type"] for b in bodies] == [
        "zen:event-type:ticket.status_changed",
        "zen:event-type:ticket.comment_added",
    ]
    for headers, body in receiver.requests:
        ts = headers[TIMESTAMP_HEADER]
        assert headers[SIGNATURE_HEADER] == sign(secret, ts, body)
        assert headers["X-Zendesk-Webhook-Id"] == wid
    status = bodies[0]
    assert status["event"] == {"current": "SOLVED", "previous": "NEW"}
    assert status["subject"] == f"zen:ticket:{t['id']}"
    assert status["zendesk_event_version"] == "2022-11-06"
    detail = status["detail"]
    assert (detail["id"], detail["organization_id"], detail["status"], detail["priority"]) == (
        str(t["id"]), "9001", "SOLVED", "LOW",
    )  # fmt: skip
    comment = bodies[1]["event"]["comment"]
    assert (comment["body"], comment["is_public"], comment["author"]["is_staff"]) == (
        "done", True, True,
    )  # fmt: skip
    assert isinstance(comment["id"], str)


def documented_signature(secret: str, timestamp: str, body: bytes) -> str:
    """NOTES §3.1, computed here rather than by any project code:
    base64(HMAC-SHA256 keyed by the secret's UTF-8 bytes, over TIMESTAMP + BODY)."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + body, hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


async def test_delivery_signature_headers_verify_with_the_documented_algorithm(
    sim: SocSimulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    # Everything over raw HTTP with the reference's header names, so neither
    # socbridge's client nor its signing code takes part.
    basic = base64.b64encode(f"{fixture.API_EMAIL}/token:{fixture.API_TOKEN}".encode()).decode()
    auth = {"Authorization": f"Basic {basic}"}
    spec = {
        "name": "probe",
        "endpoint": receiver.url,
        "http_method": "POST",
        "request_format": "json",
        "status": "active",
        "subscriptions": ["zen:event-type:ticket.created", "zen:event-type:ticket.status_changed"],
    }
    async with http.post(f"{sim.url}/api/v2/webhooks", json={"webhook": spec}, headers=auth) as r:
        wid = (await r.json())["webhook"]["id"]
    async with http.get(f"{sim.url}/api/v2/webhooks/{wid}/signing_secret", headers=auth) as r:
        secret = (await r.json())["signing_secret"]["secret"]
    ticket = {"subject": "S", "comment": {"body": "b"}, "organization_id": 9001}
    async with http.post(f"{sim.url}/api/v2/tickets", json={"ticket": ticket}, headers=auth) as r:
        tid = (await r.json())["ticket"]["id"]
    update = {"ticket": {"status": "open"}}
    async with http.put(f"{sim.url}/api/v2/tickets/{tid}", json=update, headers=auth) as r:
        assert r.status == 200
    await sim.dispatcher.drain()
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        timestamp = headers["X-Zendesk-Webhook-Signature-Timestamp"]
        assert time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")  # NOTES §3.1 example form
        expected = documented_signature(secret, timestamp, body)
        assert hmac.compare_digest(headers["X-Zendesk-Webhook-Signature"], expected)
        # Signed over this exact body and timestamp: any other pair fails.
        assert documented_signature(secret, timestamp, body + b" ") != expected
        assert documented_signature(secret + "x", timestamp, body) != expected


async def test_failed_delivery_is_retried_and_signed_afresh(
    sim: SocSimulator, client: SocClient, receiver: Receiver
) -> None:
    await subscribe(client, receiver.url, "created")
    receiver.fail_first = 2
    await client.create_ticket(subject="R", body="b", organization_id=9001)
    await sim.dispatcher.drain()
    assert len(receiver.requests) == 3
    assert [d.outcome for d in sim.dispatcher.deliveries] == [
        "failed 500",
        "failed 500",
        "delivered 200",
    ]
    assert len({orjson.loads(b)["id"] for _, b in receiver.requests}) == 1


async def test_inactive_or_deleted_webhooks_get_nothing(
    sim: SocSimulator, client: SocClient, receiver: Receiver
) -> None:
    wid, _ = await subscribe(client, receiver.url, "created", "soft_deleted")
    await client.update_webhook(wid, {"status": "inactive"})
    await client.create_ticket(subject="quiet", body="b", organization_id=9001)
    await sim.dispatcher.drain()
    assert receiver.requests == []
    await client.update_webhook(wid, {"status": "active"})
    t = await client.create_ticket(subject="loud", body="b", organization_id=9001)
    await client.remote.request("DELETE", f"tickets/{t['id']}.json")
    with pytest.raises(SocNotFoundError):
        await client.get_ticket(t["id"])
    await sim.dispatcher.drain()
    types = [orjson.loads(b)["type"] for _, b in receiver.requests]
    assert types == ["zen:event-type:ticket.created", "zen:event-type:ticket.soft_deleted"]
    await client.delete_webhook(wid)
    await client.create_ticket(subject="gone", body="b", organization_id=9001)
    await sim.dispatcher.drain()
    assert len(receiver.requests) == 2


async def test_concurrency_cap_is_honoured(sim: SocSimulator, settings: Any) -> None:
    capped = settings.model_copy(update={"max_concurrency": 2})
    sim.faults.update({"latency": 0.2})
    async with SocClient.from_settings(capped, capped.load_token()) as c:
        started = time.monotonic()
        await asyncio.gather(*(c.me() for _ in range(6)))
        elapsed = time.monotonic() - started
    assert elapsed >= 0.6  # 6 requests, 2 at a time, 0.2 s each
