"""The webhook intake route: simulator deliveries in, observation events out,
and every kind of bad delivery refused with a 4xx that changes no ticket stream."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from daemon.connectors.intake import REJECTED_STREAM
from daemon.connectors.soc import install
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.intake import ROUTE as WEBHOOK_ROUTE
from daemon.connectors.soc.intake import WebhookIntake
from daemon.connectors.soc.settings import SocSettings
from daemon.connectors.soc.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from daemon.service.secrets import Secret, load_secret
from daemon.simulators.soc import SocSimulator
from eventstore import EventStore, utc_now
from tests.support.soc import TENANTS

# NOTES §3.3 Example B (a real ticket.created delivery), organization set to ACME's.
EXAMPLE_B: dict[str, Any] = {
    "account_id": 22129848,
    "detail": {
        "actor_id": "8447388090494", "assignee_id": "8447388090494", "brand_id": "8447346621310",
        "created_at": "2025-01-08T10:12:07Z", "custom_status": "8447320465790",
        "description": "ticket_info_desc_2294a6e9ece2", "external_id": None,
        "form_id": "8646151517822", "group_id": "8447320466430", "id": "5158", "is_public": True,
        "organization_id": "9001", "priority": "LOW", "requester_id": "8447388090494",
        "status": "OPEN", "subject": "ticketinfo_2294a6e9ece2", "submitter_id": "8447388090494",
        "tags": ["ticket-info-test-tag"], "type": "TASK", "updated_at": "2025-01-08T10:12:07Z",
        "via": {"channel": "web_service"},
    },
    "event": {},
    "id": "cbe4028c-7239-495d-b020-f22348516046",
    "subject": "zen:ticket:5158",
    "time": "2025-01-08T10:12:07.672717030Z",
    "type": "zen:event-type:ticket.created",
    "zendesk_event_version": "2022-11-06",
}  # fmt: skip


def stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    secret: Secret | None,
    *,
    ts: str | None = None,
    signed_body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    ts = ts or stamp(datetime.now(UTC))
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(
            secret, ts, signed_body if signed_body is not None else body
        )
        headers[TIMESTAMP_HEADER] = ts
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


@pytest.fixture
async def installed(client: SocClient, settings: SocSettings, daemon: str) -> Secret:
    result = await install.install(client, settings)
    assert result.healthy, result.problems
    return load_secret(settings.webhook.signing_secret)


async def all_events(store: EventStore) -> list[Any]:
    return await store.read_batch(0, 10_000)


async def test_api_changes_arrive_as_observations(
    installed: Secret, sim: SocSimulator, client: SocClient, store: EventStore
) -> None:
    t = await client.create_ticket(
        subject="Phishing", body="User clicked a link", organization_id=9001, external_id="cw:5"
    )
    await client.set_status(t["id"], "open")
    await client.set_priority(t["id"], "urgent")
    await client.add_comment(t["id"], "Reset the password", public=True)
    await sim.dispatcher.drain()
    events = await store.read_stream(f"soc:ticket:{t['id']}")
    kinds = [(e.type, (e.data.get("change") or {}).get("type")) for e in events]
    assert kinds == [
        ("soc.ticket.observed", "created"),
        ("soc.ticket.observed", "status_changed"),
        ("soc.ticket.observed", "priority_changed"),
        ("soc.ticket.observed", "comment_added"),
        ("soc.comment.observed", None),
    ]
    assert {(e.tenant, e.ticket, e.source) for e in events} == {("acme", f"soc:{t['id']}", "soc")}
    status = events[1].data
    assert (status["status"], status["change"]["previous"], status["change"]["current"]) == (
        "open",
        "NEW",
        "OPEN",
    )
    assert status["external_id"] == "cw:5" and status["organization_id"] == 9001
    assert status["via"] == "webhook"
    comment = events[-1].data
    assert (comment["body"], comment["public"], comment["ticket_id"]) == (
        "Reset the password",
        True,
        t["id"],
    )


async def test_duplicated_delivery_is_recorded_once(
    installed: Secret, sim: SocSimulator, client: SocClient, store: EventStore
) -> None:
    sim.faults.update({"webhook_duplicate_next": 1})
    t = await client.create_ticket(subject="Dup", body="b", organization_id=9002)
    await sim.dispatcher.drain()
    delivered = [d for d in sim.dispatcher.deliveries if d.outcome == "delivered 200"]
    assert len(delivered) == 2 and delivered[0].event_id == delivered[1].event_id
    events = await store.read_stream(f"soc:ticket:{t['id']}")
    assert len(events) == 1 and events[0].tenant == "globex"


async def test_reordered_deliveries_keep_their_source_times(
    installed: Secret, sim: SocSimulator, client: SocClient, store: EventStore
) -> None:
    t = await client.create_ticket(subject="R", body="b", organization_id=9001)
    await sim.dispatcher.drain()
    sim.faults.update({"webhook_reorder": True})
    await client.set_status(t["id"], "open")
    await client.set_priority(t["id"], "low")
    await sim.dispatcher.drain()
    events = (await store.read_stream(f"soc:ticket:{t['id']}"))[1:]
    arrived = [e.data["change"]["type"] for e in events]
    assert arrived == ["priority_changed", "status_changed"]
    by_source_time = sorted(events, key=lambda e: e.occurred_at or "")
    assert [e.data["change"]["type"] for e in by_source_time] == [
        "status_changed",
        "priority_changed",
    ]


async def test_unknown_organization_is_refused_with_4xx(
    installed: Secret, sim: SocSimulator, client: SocClient, store: EventStore
) -> None:
    t = await client.create_ticket(subject="Not ours", body="b", organization_id=9003)
    await sim.dispatcher.drain()
    assert [d.outcome for d in sim.dispatcher.deliveries] == ["failed 422"]
    assert await store.read_stream(f"soc:ticket:{t['id']}") == []
    rejected = await store.read_stream(REJECTED_STREAM)
    assert [e.data["reason"] for e in rejected] == ["unknown_tenant"]


async def test_real_example_envelope_is_accepted(
    installed: Secret, daemon: str, http: aiohttp.ClientSession, store: EventStore
) -> None:
    body = orjson.dumps(EXAMPLE_B)
    status, doc = await post(http, daemon, body, installed, ts=stamp(datetime.now(UTC)))
    assert (status, doc["status"]) == (200, "accepted")
    [event] = await store.read_stream("soc:ticket:5158")
    assert (event.data["status"], event.data["priority"], event.tenant) == ("open", "low", "acme")
    status, doc = await post(http, daemon, body, installed)
    assert (status, doc["status"]) == (200, "duplicate")
    assert len(await store.read_stream("soc:ticket:5158")) == 1


async def test_redelivery_to_a_restarted_daemon_is_a_duplicate_and_wakes_nothing(
    settings: SocSettings, http: aiohttp.ClientSession, store: EventStore
) -> None:
    # Whether a delivery id was seen comes from the append itself (no read first): a
    # fresh handler on the same log (a restarted daemon) must still recognise it.
    secret = Secret("whsec-test")
    created: list[tuple[int, str]] = []

    async def deliver(body: bytes) -> tuple[tuple[int, str], dict[str, int]]:
        intake = WebhookIntake(
            store, settings, TENANTS, utc_now, secret=lambda: secret,
            kick=lambda t, tenant: created.append((t, tenant or "")),
        )  # fmt: skip
        app = web.Application()
        app.router.add_post(WEBHOOK_ROUTE, intake.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}{WEBHOOK_ROUTE}"
        try:
            status, doc = await post(http, url, body, secret)
        finally:
            await runner.cleanup()
        return (status, doc["status"]), dict(intake.counts)

    body = orjson.dumps(EXAMPLE_B)
    assert await deliver(body) == ((200, "accepted"), {"accepted": 1})
    assert await deliver(body) == ((200, "duplicate"), {"duplicate": 1})
    other = orjson.dumps({**EXAMPLE_B, "id": "0b7c41d2-0000-4000-8000-000000000001"})
    assert await deliver(other) == ((200, "accepted"), {"accepted": 1})
    assert created == [(5158, "acme"), (5158, "acme")]  # not for the redelivery
    assert len(await store.read_stream("soc:ticket:5158")) == 2


def _bad_cases(secret: Secret) -> list[tuple[str, dict[str, Any], int, str]]:
    good = orjson.dumps(EXAMPLE_B)
    now = datetime.now(UTC)
    no_detail = {k: v for k, v in EXAMPLE_B.items() if k != "detail"}
    user_event = {**EXAMPLE_B, "type": "zen:event-type:user.active_changed"}
    bad_status = {**EXAMPLE_B, "detail": {**EXAMPLE_B["detail"], "status": "EXPLODED"}}
    mismatch = {**EXAMPLE_B, "subject": "zen:ticket:1"}
    comment_no_body = {**EXAMPLE_B, "type": "zen:event-type:ticket.comment_added"}
    return [
        (
            "wrong secret",
            {"body": good, "secret": Secret("not-the-secret")},
            401,
            "signature_mismatch",
        ),
        ("unsigned", {"body": good, "secret": None}, 401, "signature_missing"),
        ("stale", {"body": good, "ts": stamp(now - timedelta(minutes=6))}, 401, "timestamp_stale"),
        (
            "future",
            {"body": good, "ts": stamp(now + timedelta(minutes=2))},
            401,
            "timestamp_in_future",
        ),
        (
            "one byte altered",
            {"body": good.replace(b"LOW", b"LOX"), "signed_body": good},
            401,
            "signature_mismatch",
        ),
        ("malformed json", {"body": b'{"id": '}, 400, "malformed_json"),
        ("not an object", {"body": b"[1, 2]"}, 400, "malformed_json"),
        ("no detail", {"body": orjson.dumps(no_detail)}, 422, "schema"),
        ("not a ticket event", {"body": orjson.dumps(user_event)}, 422, "schema"),
        ("bad status", {"body": orjson.dumps(bad_status)}, 422, "schema"),
        ("subject mismatch", {"body": orjson.dumps(mismatch)}, 422, "schema"),
        ("comment event without comment", {"body": orjson.dumps(comment_no_body)}, 422, "schema"),
        ("oversized", {"body": b"{" + b" " * (300 * 1024) + b"}"}, 413, "too_large"),
    ]


async def test_bad_deliveries_get_clear_4xx_and_change_no_ticket(
    installed: Secret, daemon: str, http: aiohttp.ClientSession, store: EventStore
) -> None:
    cases = _bad_cases(installed)
    for name, kw, want_status, want_reason in cases:
        body = kw.pop("body")
        secret = kw.pop("secret", installed)
        status, doc = await post(http, daemon, body, secret, **kw)
        assert (status, doc["error"]) == (want_status, want_reason), name
        assert doc["message"] and installed.reveal() not in doc["message"]
    events = await all_events(store)
    assert [e.stream for e in events] == [REJECTED_STREAM] * len(cases)
    assert [e.data["reason"] for e in events] == [c[3] for c in cases]
    recorded = orjson.dumps([e.data for e in events])
    assert b"ticketinfo_2294a6e9ece2" not in recorded  # metadata only, never the body
    assert installed.reveal().encode() not in recorded


async def test_chunked_oversized_body_is_refused(
    installed: Secret, daemon: str, http: aiohttp.ClientSession, store: EventStore
) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b" " * 10_000

    async with http.post(daemon, data=chunks()) as r:
        assert r.status == 413 and (await r.json())["error"] == "too_large"
    [event] = await all_events(store)
    assert event.data["reason"] == "too_large"


async def test_missing_signing_secret_is_503_and_records_nothing(
    settings: SocSettings, store: EventStore, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    app = web.Application()
    app.router.add_post(WEBHOOK_ROUTE, WebhookIntake(store, settings, TENANTS, utc_now).handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        assert not os.path.exists(settings.webhook.signing_secret)
        status, doc = await post(
            http, f"http://127.0.0.1:{port}{WEBHOOK_ROUTE}", orjson.dumps(EXAMPLE_B), Secret("x")
        )
    finally:
        await runner.cleanup()
    assert status == 503 and "webhooks install" in doc["message"]
    assert await all_events(store) == []
