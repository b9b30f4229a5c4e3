"""socbridge's own SOC client against the simulator over loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog

from daemon.connectors.contract import RemoteUnavailableError, RetryAfterTooLongError
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.errors import (
    SocAuthError,
    SocConflictError,
    SocForbiddenError,
    SocNotFoundError,
    SocRateLimitedError,
    SocServerError,
    SocValidationError,
)
from daemon.connectors.soc.settings import SocSettings
from daemon.service.secrets import Secret
from daemon.simulators.soc import SocSimulator, fixture
from daemon.simulators.soc.state import Organization
from tests.support.soc import make_settings


async def make_ticket(client: SocClient, n: int = 1, key: str | None = None) -> dict:
    return await client.create_ticket(
        subject=f"Alert {n}",
        body=f"EDR alert number {n}",
        organization_id=9001,
        external_id=f"cw:{n}",
        priority="high",
        idempotency_key=key,
    )


async def test_ticket_lifecycle_through_the_client(client: SocClient, sim: SocSimulator) -> None:
    t = await make_ticket(client, key="cw-1")
    assert t["external_id"] == "cw:1" and t["organization_id"] == 9001
    assert (await client.get_ticket(t["id"]))["description"] == "EDR alert number 1"
    assert (await client.set_status(t["id"], "open"))["status"] == "open"
    assert (await client.set_priority(t["id"], "urgent"))["priority"] == "urgent"
    doc = await client.add_comment(t["id"], "Contained", public=True)
    assert doc["audit"]["events"][0]["type"] == "Comment"
    comments = await client.list_comments(t["id"])
    assert [(c["body"], c["public"]) for c in comments] == [
        ("EDR alert number 1", False),
        ("Contained", True),
    ]
    assert [x["id"] for x in await client.find_by_external_id("cw:1")] == [t["id"]]
    assert (await client.me())["email"] == fixture.API_EMAIL


async def test_lists_follow_cursor_pages(client: SocClient, sim: SocSimulator) -> None:
    now = sim.state.clock()
    for i in range(120):
        sim.state.organizations[20000 + i] = Organization(20000 + i, f"Org {i}", None, now)
    orgs = await client.list_organizations()
    assert len(orgs) == 123 and len({o["id"] for o in orgs}) == 123


async def test_safe_update_conflict_is_typed(client: SocClient) -> None:
    t = await make_ticket(client)
    await client.set_priority(t["id"], "low")
    with pytest.raises(SocConflictError) as info:
        await client.set_status(t["id"], "solved", updated_stamp=t["updated_at"])
    assert info.value.status == 409 and info.value.error == "UpdateConflict"
    assert (await client.get_ticket(t["id"]))["status"] == "new"
    fresh = await client.get_ticket(t["id"])
    solved = await client.set_status(t["id"], "solved", updated_stamp=fresh["updated_at"])
    assert solved["status"] == "solved"


async def test_error_bodies_become_typed_exceptions(
    client: SocClient, sim: SocSimulator, tmp_path: Path, settings: SocSettings
) -> None:
    with pytest.raises(SocNotFoundError, match="RecordNotFound"):
        await client.get_ticket(1)
    t = await make_ticket(client)
    await client.set_status(t["id"], "closed")
    with pytest.raises(SocValidationError) as info:
        await client.add_comment(t["id"], "too late")
    assert info.value.details == {
        "status": [{"description": "Status: closed prevents ticket update"}]
    }
    async with SocClient.from_settings(settings, Secret("wrong-token")) as bad:
        with pytest.raises(SocAuthError):
            await bad.get_ticket(t["id"])
    enduser = settings.model_copy(update={"email": fixture.END_USER_EMAIL})
    async with SocClient.from_settings(enduser, Secret(fixture.END_USER_TOKEN)) as eu:
        with pytest.raises(SocForbiddenError):
            await eu.list_webhooks()


async def test_token_never_appears_in_repr_errors_or_logs(
    sim: SocSimulator, settings: SocSettings
) -> None:
    token = settings.load_token()
    assert fixture.API_TOKEN not in repr(token) and fixture.API_TOKEN not in repr(settings)
    sim.faults.update({"rate_limit_next": 2, "retry_after": 0})
    with structlog.testing.capture_logs() as logs:
        async with SocClient.from_settings(settings, Secret("wrong-" + fixture.API_TOKEN)) as bad:
            assert "wrong-" not in repr(bad)
            with pytest.raises(SocAuthError) as info:
                await bad.me()
    assert len(logs) >= 2  # the two 429 retries were logged
    text = repr(logs) + str(info.value) + repr(info.value) + repr(info.value.__dict__)
    assert fixture.API_TOKEN not in text


async def test_429_storm_loses_no_write(sim: SocSimulator, settings: SocSettings) -> None:
    # Half of all requests answered 429 (Retry-After 0); enough attempts to ride it out.
    patient = settings.model_copy(update={"max_attempts": 25})
    sim.faults.update({"rate_limit_ratio": 0.5, "retry_after": 0, "seed": 7})
    n = 25

    async def one(c: SocClient, i: int) -> int:
        t = await make_ticket(c, i, key=f"cw-{i}")
        await c.add_comment(t["id"], f"note {i}", updated_stamp=t["updated_at"])
        await c.set_status(t["id"], "open")
        return int(t["id"])

    async with SocClient.from_settings(patient, patient.load_token()) as c:
        ids = await asyncio.gather(*(one(c, i) for i in range(n)))
    assert sim.faults.api_faults_injected >= 20
    assert len(set(ids)) == n and len(sim.state.tickets) == n
    for i, tid in enumerate(ids):
        ticket = sim.state.tickets[tid]
        assert ticket.status == "open"
        assert [c.body for c in ticket.comments] == [f"EDR alert number {i}", f"note {i}"]


async def test_429_retry_after_is_waited_out(sim: SocSimulator, client: SocClient) -> None:
    sim.faults.update({"rate_limit_next": 1, "retry_after": 1})
    started = time.monotonic()
    assert (await client.me())["id"] == fixture.API_USER_ID
    assert time.monotonic() - started >= 1.0


async def test_5xx_backs_off_and_then_succeeds(sim: SocSimulator, client: SocClient) -> None:
    t = await make_ticket(client)
    sim.faults.update({"error_next": 3, "error_status": 502})
    before = client.remote.attempts_made
    assert (await client.get_ticket(t["id"]))["id"] == t["id"]
    assert client.remote.attempts_made - before == 4


async def test_5xx_that_never_ends_is_a_server_error(
    sim: SocSimulator, tmp_path: Path, settings: SocSettings
) -> None:
    few = settings.model_copy(update={"max_attempts": 3})
    sim.faults.update({"error_next": 10})
    async with SocClient.from_settings(few, few.load_token()) as c:
        with pytest.raises(SocServerError):
            await c.me()
        assert c.remote.attempts_made == 3


async def test_rate_limit_that_never_ends_is_typed(
    sim: SocSimulator, settings: SocSettings
) -> None:
    few = settings.model_copy(update={"max_attempts": 2})
    sim.faults.update({"rate_limit_next": 5, "retry_after": 0})
    async with SocClient.from_settings(few, few.load_token()) as c:
        with pytest.raises(SocRateLimitedError):
            await c.me()


async def test_retry_after_beyond_the_cap_is_not_waited_out(
    sim: SocSimulator, settings: SocSettings
) -> None:
    capped = settings.model_copy(update={"max_retry_after_seconds": 5})
    sim.faults.update({"rate_limit_next": 1, "retry_after": 600})
    async with SocClient.from_settings(capped, capped.load_token()) as c:
        started = time.monotonic()
        with pytest.raises(RetryAfterTooLongError):
            await c.me()
        assert time.monotonic() - started < 5


async def test_timeouts_back_off_then_give_up(sim: SocSimulator, settings: SocSettings) -> None:
    slow = settings.model_copy(update={"timeout_seconds": 0.2, "max_attempts": 2})
    sim.faults.update({"latency": 1.0})
    async with SocClient.from_settings(slow, slow.load_token()) as c:
        with pytest.raises(RemoteUnavailableError) as info:
            await c.me()
    assert info.value.attempts == 2


async def test_create_with_idempotency_key_survives_a_lost_reply(
    sim: SocSimulator, client: SocClient
) -> None:
    sim.faults.update({"error_after_commit_next": 1})
    t = await make_ticket(client, key="cw-ticket-42")
    assert len(sim.state.tickets) == 1 and t["id"] in sim.state.tickets


async def test_create_without_key_is_not_retried_after_a_lost_reply(
    sim: SocSimulator, client: SocClient
) -> None:
    sim.faults.update({"error_after_commit_next": 1, "error_status": 502})
    with pytest.raises(SocServerError):
        await make_ticket(client)
    assert len(sim.state.tickets) == 1  # it did happen once, and only once


async def test_stamped_comment_is_never_doubled_by_a_retry(
    sim: SocSimulator, client: SocClient
) -> None:
    t = await make_ticket(client)
    sim.faults.update({"error_after_commit_next": 1, "error_status": 502})
    with pytest.raises(SocConflictError):
        await client.add_comment(t["id"], "only once", updated_stamp=t["updated_at"])
    assert [c.body for c in sim.state.tickets[t["id"]].comments].count("only once") == 1


async def test_incremental_export_pages_by_cursor(sim: SocSimulator, client: SocClient) -> None:
    a = await make_ticket(client, 1)
    page = await client.incremental_tickets(start_time=int(time.time()) - 60)
    assert [x["id"] for x in page.tickets] == [a["id"]] and page.end_of_stream
    b = await make_ticket(client, 2)
    nxt = await client.incremental_tickets(cursor=page.after_cursor)
    assert [x["id"] for x in nxt.tickets] == [b["id"]]
    with pytest.raises(ValueError):
        await client.incremental_tickets()


async def test_bad_arguments_are_refused_before_any_request(client: SocClient) -> None:
    with pytest.raises(ValueError, match="priority"):
        await client.create_ticket(subject="s", body="b", organization_id=9001, priority="p1")
    with pytest.raises(ValueError, match="status"):
        await client.set_status(1, "done")
    assert client.remote.attempts_made == 0


def test_settings_refuse_plain_http_off_loopback_and_credential_urls(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="https"):
        make_settings("http://soc.example.com", tmp_path, "https://bridge.example/webhooks/soc")
    with pytest.raises(ValidationError, match="credentials"):
        make_settings("https://u:p@soc.example.com", tmp_path, "https://b.example/webhooks/soc")
    with pytest.raises(ValidationError, match="file path"):
        make_settings(
            "https://soc.example.com",
            tmp_path,
            "https://b.example/webhooks/soc",
            webhook={"public_url": "https://b.example/x", "signing_secret": "credential:x"},
        )
