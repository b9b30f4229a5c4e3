"""The callback intake, fed by the simulator's signed callbacks and by crafted
requests, over loopback into a real event log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.intake import ROUTE as ROUTE_PATH
from daemon.connectors.connectwise.intake import CallbackIntake
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.connectwise.signing import SigningKeyCache
from daemon.simulators.connectwise import SimServer, fixture
from daemon.simulators.connectwise.callbacks import sign
from daemon.simulators.connectwise.faults import ApiFault
from eventstore import EventStore
from tests.support.connectwise import callback_intake

TENANTS = {250: "acme", 251: "globex"}


class Daemon:
    def __init__(self, url: str, intake: CallbackIntake, store: EventStore) -> None:
        self.url = url
        self.intake = intake
        self.store = store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(tmp_path / "events.db")
    yield s
    await s.close()


@asynccontextmanager
async def serve_intake(
    store: EventStore,
    settings: ConnectWiseSettings,
    http: aiohttp.ClientSession,
    key_cache: SigningKeyCache | None = None,
) -> AsyncIterator[Daemon]:
    intake = callback_intake(store, settings, TENANTS, http, key_cache)
    app = web.Application()
    app.router.add_post(ROUTE_PATH, intake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Daemon(f"http://127.0.0.1:{port}{ROUTE_PATH}", intake, store)
    finally:
        await runner.cleanup()


@pytest.fixture
async def daemon(
    store: EventStore, settings: ConnectWiseSettings, http: aiohttp.ClientSession
) -> AsyncIterator[Daemon]:
    async with serve_intake(store, settings, http) as d:
        yield d


async def register(cw: ConnectWiseClient, daemon: Daemon) -> None:
    await cw.create_callback(
        {"url": daemon.url, "objectId": fixture.BOARD_ID, "type": "ticket", "level": "board"}
    )


async def ticket_events(store: EventStore, ticket_id: int) -> list[Any]:
    return await store.read_stream(f"cw:ticket:{ticket_id}")


async def test_signed_callbacks_become_observations(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, daemon: Daemon
) -> None:
    await register(cw, daemon)
    t = await tech.create_ticket({"summary": "Ransomware alert", "company": {"id": 250},
                                  "board": {"id": fixture.BOARD_ID}})  # fmt: skip
    await tech.update_ticket(t["id"], {"status": {"id": fixture.STATUS_IDS["Send to SOC"]}})
    await cw.create_note(t["id"], "SOC reply", "Discussion")
    await sim.callbacks.drain()
    events = await ticket_events(daemon.store, t["id"])
    assert [e.type for e in events] == ["connectwise.ticket.observed"] * 3
    assert [e.data["action"] for e in events] == ["added", "updated", "updated"]
    assert events[1].data["status"] == "Send to SOC" and events[1].tenant == "acme"
    assert events[1].ticket == f"cw:{t['id']}" and events[1].source == "connectwise"
    assert [e.data["own_write"] for e in events] == [False, False, True]  # note written by us
    assert daemon.intake.counts["accepted"] == 3


async def test_duplicate_message_is_recorded_once(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, daemon: Daemon
) -> None:
    await register(cw, daemon)
    sim.faults.update({"duplicate_callbacks": 1})
    t = await tech.create_ticket({"summary": "Dup", "company": {"id": 251},
                                  "board": {"id": fixture.BOARD_ID}})  # fmt: skip
    await sim.callbacks.drain()
    assert len([d for d in sim.callbacks.deliveries if d.status == 200]) == 2
    assert len(await ticket_events(daemon.store, t["id"])) == 1
    assert daemon.intake.counts["duplicate"] == 1


async def test_redelivery_after_a_restart_or_with_another_body_is_a_duplicate_written_once(
    sim: SimServer, store: EventStore, settings: ConnectWiseSettings, http: aiohttp.ClientSession
) -> None:
    # No read before the append: whether a MessageId was seen comes from the append
    # itself, so a fresh intake (a restarted daemon) must still recognise old ones.
    body = orjson.dumps(envelope(sim, MessageId="m-once"))
    other = {"id": 77, "summary": "edited since", "company": {"id": 250},
             "board": {"id": 41, "name": "SOC Incidents"},
             "_info": {"lastUpdated": "2026-01-01T00:00:09Z"}}  # fmt: skip
    changed = orjson.dumps(envelope(sim, MessageId="m-once", Entity=orjson.dumps(other).decode()))
    async with serve_intake(store, settings, http) as first:
        status, doc = await post(http, first, body, sign(sim.state.signing_key, body))
        assert (status, doc["status"]) == (200, "accepted")
        accepted_id = doc["event_id"]
        status, doc = await post(http, first, body, sign(sim.state.signing_key, body))
        assert (status, doc["status"], doc["event_id"]) == (200, "duplicate", accepted_id)
        assert dict(first.intake.counts) == {"accepted": 1, "duplicate": 1}
    async with serve_intake(store, settings, http) as restarted:
        for raw in (body, changed, body):
            status, doc = await post(http, restarted, raw, sign(sim.state.signing_key, raw))
            assert (status, doc["status"], doc["event_id"]) == (200, "duplicate", accepted_id)
        # A new MessageId is still new after those.
        fresh = orjson.dumps(envelope(sim, MessageId="m-new"))
        status, doc = await post(http, restarted, fresh, sign(sim.state.signing_key, fresh))
        assert (status, doc["status"]) == (200, "accepted")
        assert dict(restarted.intake.counts) == {"duplicate": 3, "accepted": 1}
    events = await ticket_events(store, 77)
    assert [e.data["message_id"] for e in events] == ["m-once", "m-new"]
    assert events[0].data["summary"] == "x"  # the first observation stands


async def test_known_ticket_of_a_tenant_whose_sync_is_off_is_ignored_until_it_is_on(
    sim: SimServer, store: EventStore, settings: ConnectWiseSettings, http: aiohttp.ClientSession
) -> None:
    tenants = dict(TENANTS)  # a live mapping: only tenants whose sync is on (R9)
    runner, daemon = await _serve(callback_intake(store, settings, tenants, http), store)
    outcomes = []
    try:
        for message, on in (("m-on", True), ("m-off", False), ("m-on-again", True)):
            if on:
                tenants[250] = "acme"
            else:
                del tenants[250]
            body = orjson.dumps(envelope(sim, MessageId=message))
            status, doc = await post(http, daemon, body, sign(sim.state.signing_key, body))
            outcomes.append((status, doc["status"], doc.get("reason")))
    finally:
        await runner.cleanup()
    assert outcomes == [
        (200, "accepted", None),
        (200, "ignored", "tenant_sync_off"),  # known under acme, whose sync is off
        (200, "accepted", None),
    ]
    assert [e.data["message_id"] for e in await ticket_events(store, 77)] == ["m-on", "m-on-again"]


async def test_other_customers_tickets_are_ignored_with_200(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, daemon: Daemon
) -> None:
    await register(cw, daemon)
    t = await tech.create_ticket({"summary": "Initech printer", "company": {"id": 260},
                                  "board": {"id": fixture.BOARD_ID}})  # fmt: skip
    await sim.callbacks.drain()
    assert [d.status for d in sim.callbacks.deliveries] == [200]  # no retries provoked
    assert await ticket_events(daemon.store, t["id"]) == []
    assert daemon.intake.counts["ignored.not_a_tenant"] == 1


async def test_ticket_moved_to_other_company_keeps_being_recorded(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, daemon: Daemon
) -> None:
    await register(cw, daemon)
    t = await tech.create_ticket({"summary": "Moves", "company": {"id": 250},
                                  "board": {"id": fixture.BOARD_ID}})  # fmt: skip
    await tech.update_ticket(t["id"], {"company": {"id": 260}})
    await tech.remote.request("DELETE", f"service/tickets/{t['id']}")
    await sim.callbacks.drain()
    events = await ticket_events(daemon.store, t["id"])
    assert [e.type for e in events][-1] == "connectwise.ticket.deleted"
    assert events[1].data["company_id"] == 260 and {e.tenant for e in events} == {"acme"}


def envelope(sim: SimServer, **over: Any) -> dict[str, Any]:
    entity = {
        "id": 77, "summary": "x", "company": {"id": 250},
        "board": {"id": 41, "name": "SOC Incidents"},
        "_info": {"lastUpdated": "2026-01-01T00:00:00Z"},
    }  # fmt: skip
    doc = {
        "Action": "updated", "CallbackObjectRecId": 1, "CompanyId": fixture.LOGIN_COMPANY,
        "Entity": orjson.dumps(entity).decode(), "FromUrl": "127.0.0.1", "ID": 77,
        "MemberId": "jsmith", "MessageId": "m-1", "Type": "ticket",
        "Metadata": {"key_url": sim.callbacks.key_url},
    }  # fmt: skip
    doc.update(over)
    return doc


async def post(
    http: aiohttp.ClientSession, daemon: Daemon, body: bytes, sig: str | None
) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if sig is not None:
        headers["x-content-signature"] = sig
    async with http.post(daemon.url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda s, b: (b"{not json", "sign"), 400, "bad_json"),
        (lambda s, b: (orjson.dumps([1]), "sign"), 400, "bad_envelope"),
        (lambda s, b: (orjson.dumps({**b, "ID": "77"}), "sign"), 400, "bad_envelope"),
        (lambda s, b: (orjson.dumps({**b, "Action": "exploded"}), "sign"), 400, "bad_envelope"),
        (
            lambda s, b: (orjson.dumps({**b, "CompanyId": "evilcorp"}), "sign"),
            403,
            "unknown_company",
        ),
        (lambda s, b: (orjson.dumps(b), None), 401, "unsigned"),
        (lambda s, b: (orjson.dumps(b), "AAAA"), 401, "bad_signature"),
        (
            lambda s, b: (
                orjson.dumps({**b, "Metadata": {"key_url": "https://evil.example/k"}}),
                "sign",
            ),
            403,
            "unsafe_key_url",
        ),
        (lambda s, b: (orjson.dumps({**b, "Entity": "{oops"}), "sign"), 400, "bad_entity"),
        (lambda s, b: (orjson.dumps({**b, "Entity": '{"id": 5}'}), "sign"), 400, "bad_entity"),
    ],
)
async def test_refusals_are_clear_4xx_and_append_nothing_to_tickets(
    sim: SimServer,
    daemon: Daemon,
    http: aiohttp.ClientSession,
    mutate: Any,
    status: int,
    reason: str,
) -> None:
    body, sig = mutate(sim, envelope(sim))
    if sig == "sign":
        sig = sign(sim.state.signing_key, body)
    got_status, doc = await post(http, daemon, body, sig)
    assert (got_status, doc["reason"]) == (status, reason)
    assert await ticket_events(daemon.store, 77) == []
    rejected = await daemon.store.read_stream("intake:rejected")
    assert [e.data["reason"] for e in rejected] == [reason]
    assert daemon.intake.counts[f"rejected.{reason}"] == 1


async def test_unsafe_key_url_is_never_fetched(
    sim: SimServer, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    hits: list[str] = []

    async def trap(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"signing_key": "attacker"})

    app = web.Application()
    app.router.add_get("/k", trap)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    evil = f"http://127.0.0.1:{runner.addresses[0][1]}/k"  # same host, other port
    body = orjson.dumps(envelope(sim, Metadata={"key_url": evil}))
    status, doc = await post(http, daemon, body, sign("attacker", body))
    await runner.cleanup()
    assert (status, doc["reason"], hits) == (403, "unsafe_key_url", [])


async def test_oversized_body_is_413(
    make_settings: Any, store: EventStore, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(callback_max_body_bytes=2048)
    async with serve_intake(store, settings, http) as d:
        status, doc = await post(http, d, b"x" * 4096, "AAAA")
    assert (status, doc["reason"]) == (413, "too_large")


async def test_signing_key_is_cached_and_refetched_once_on_rotation(
    sim: SimServer, store: EventStore, settings: ConnectWiseSettings, http: aiohttp.ClientSession
) -> None:
    now = [1000.0]
    keys = SigningKeyCache(http, ttl=3600, min_refetch=30, clock=lambda: now[0])
    async with serve_intake(store, settings, http, keys) as daemon:
        for i in range(3):
            body = orjson.dumps(envelope(sim, MessageId=f"m-{i}"))
            assert (await post(http, daemon, body, sign(sim.state.signing_key, body)))[0] == 200
        assert keys.fetches == 1
        now[0] += 60
        sim.state.signing_key = "rotated-key"
        body = orjson.dumps(envelope(sim, MessageId="m-rot"))
        assert (await post(http, daemon, body, sign("rotated-key", body)))[0] == 200
        assert keys.fetches == 2
        # A forged signature right after cannot force another fetch.
        forged = body.replace(b"m-rot", b"m-bad")
        assert (await post(http, daemon, forged, "AAAA"))[0] == 401
        assert keys.fetches == 2


async def test_a_key_connectwise_does_not_have_is_401_and_not_asked_for_again_at_once(
    sim: SimServer, store: EventStore, settings: ConnectWiseSettings, http: aiohttp.ClientSession
) -> None:
    now = [1000.0]
    keys = SigningKeyCache(http, ttl=3600, min_refetch=30, clock=lambda: now[0])
    forged_url = sim.callbacks.key_url.replace(sim.state.callback_key_id, "no-such-key")
    async with serve_intake(store, settings, http, keys) as daemon:
        for message in ("m-forged-1", "m-forged-2"):
            body = orjson.dumps(envelope(sim, MessageId=message, Metadata={"key_url": forged_url}))
            status, doc = await post(http, daemon, body, sign("guessed", body))
            # Not a 503: ConnectWise would retry a forged callback forever.
            assert (status, doc["reason"]) == (401, "unknown_signing_key")
        assert keys.fetches == 1  # the second was refused without asking ConnectWise again
        now[0] += 60
        body = orjson.dumps(envelope(sim, MessageId="m-forged-3", Metadata={"key_url": forged_url}))
        assert (await post(http, daemon, body, sign("guessed", body)))[0] == 401
        assert keys.fetches == 2
        rejected = await daemon.store.read_stream("intake:rejected")
        assert [e.data["reason"] for e in rejected] == ["unknown_signing_key"] * 3


async def test_a_key_fetch_that_fails_on_connectwises_side_is_503_so_it_retries(
    sim: SimServer, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    sim.faults.api.append(ApiFault(503, count=1, path_contains="callbackkey"))
    body = orjson.dumps(envelope(sim))
    status, _ = await post(http, daemon, body, sign(sim.state.signing_key, body))
    assert status == 503
    assert await daemon.store.read_stream("intake:rejected") == []
    # Once ConnectWise answers again, the same callback is accepted.
    status, doc = await post(http, daemon, body, sign(sim.state.signing_key, body))
    assert (status, doc["status"]) == (200, "accepted")


async def test_poller_is_woken_for_human_changes_only_not_for_socbridges_own_writes(
    sim: SimServer, settings: ConnectWiseSettings, store: EventStore, http: aiohttp.ClientSession
) -> None:
    woken: list[int] = []
    intake = callback_intake(store, settings, TENANTS, http, kick=lambda t, _: woken.append(t))
    runner, daemon = await _serve(intake, store)
    try:
        for message, member in (("m-human", "jsmith"), ("m-own", settings.api_member)):
            body = orjson.dumps(envelope(sim, MessageId=message, MemberId=member))
            status, doc = await post(http, daemon, body, sign(sim.state.signing_key, body))
            assert (status, doc["status"]) == (200, "accepted")
    finally:
        await runner.cleanup()
    # Both are recorded; only the human change may have added a note worth fetching now.
    assert [e.data["own_write"] for e in await ticket_events(store, 77)] == [False, True]
    assert woken == [77]


async def _serve(intake: CallbackIntake, store: EventStore) -> tuple[web.AppRunner, Daemon]:
    """The callback intake alone on a loopback port, and a Daemon view of it."""
    app = web.Application()
    app.router.add_post(ROUTE_PATH, intake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    daemon = Daemon(f"http://127.0.0.1:{runner.addresses[0][1]}{ROUTE_PATH}", intake, store)
    return runner, daemon
