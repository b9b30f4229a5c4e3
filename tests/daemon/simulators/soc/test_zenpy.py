"""The real Zendesk client library, zenpy 2.0.57, drives the SOC simulator unchanged.

Only the URL scheme and host differ: zenpy's own ``ZENPY_FORCE_SCHEME`` /
``ZENPY_FORCE_NETLOC`` switches point it at ``http://127.0.0.1:PORT`` (NOTES §5).
zenpy is synchronous (requests), so each scenario runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from zenpy import Zenpy
from zenpy.lib.api_objects import Audit, Comment, Ticket, TicketAudit, Webhook
from zenpy.lib.exception import APIException, RecordNotFoundException

from daemon.simulators.soc import SocSimulator, fixture

T = TypeVar("T")


@pytest.fixture
def zenpy_client(sim: SocSimulator, monkeypatch: pytest.MonkeyPatch) -> Zenpy:
    monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
    monkeypatch.setenv("ZENPY_FORCE_NETLOC", sim.url.removeprefix("http://"))
    return Zenpy(
        subdomain=fixture.SUBDOMAIN,
        email=fixture.API_EMAIL,
        token=fixture.API_TOKEN,
        disable_cache=True,
    )


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def create(z: Zenpy, **kw: Any) -> Ticket:
    fields = {
        "subject": "Ransomware beacon",
        "comment": Comment(body="Host WS-12 beaconing to C2", public=False),
        "priority": "urgent",
        "organization_id": 9001,
        "external_id": "cw:77",
        **kw,
    }
    # zenpy's idiom: create returns a TicketAudit; the ticket is its .ticket.
    ticket_audit = z.tickets.create(Ticket(**fields))
    assert isinstance(ticket_audit, TicketAudit)
    ticket: Ticket = ticket_audit.ticket
    return ticket


async def test_zenpy_creates_reads_and_updates_a_ticket(
    sim: SocSimulator, zenpy_client: Zenpy
) -> None:
    z = zenpy_client

    def scenario() -> tuple[Ticket, Any, Ticket]:
        created = create(z)
        fetched = z.tickets(id=created.id)
        fetched.status = "pending"
        fetched.comment = Comment(body="Isolated the host", public=False, author_id=7002)
        audit = z.tickets.update(fetched)
        return created, audit, z.tickets(id=created.id)

    created, audit, after = await in_thread(scenario)
    assert created.description == "Host WS-12 beaconing to C2"
    assert created.external_id == "cw:77" and created.organization_id == 9001
    assert audit.ticket.status == "pending"
    assert after.status == "pending"
    stored = sim.state.tickets[created.id]
    assert [c.body for c in stored.comments] == ["Host WS-12 beaconing to C2", "Isolated the host"]
    assert stored.comments[1].author_id == 7002


async def test_zenpy_create_returns_a_ticket_audit(sim: SocSimulator, zenpy_client: Zenpy) -> None:
    z = zenpy_client

    def scenario() -> Any:
        return z.tickets.create(
            Ticket(subject="Beacon", comment=Comment(body="C2 traffic", public=False))
        )

    ticket_audit = await in_thread(scenario)
    assert ticket_audit.ticket.id in sim.state.tickets
    assert ticket_audit.ticket.description == "C2 traffic"
    assert isinstance(ticket_audit.audit, Audit)
    assert ticket_audit.audit.ticket_id == ticket_audit.ticket.id
    events = ticket_audit.audit.events
    assert events and [(e["type"], e.get("field_name")) for e in events][:3] == [
        ("Create", "subject"),
        ("Comment", None),
        ("Create", "status"),
    ]
    assert events[1]["body"] == "C2 traffic" and events[1]["public"] is False


async def test_zenpy_creates_a_ticket_from_subject_and_description(
    sim: SocSimulator, zenpy_client: Zenpy
) -> None:
    z = zenpy_client

    def scenario() -> tuple[Any, Ticket, list[Any]]:
        # zenpy's README example: Ticket(subject=..., description=...), no comment.
        ticket_audit = z.tickets.create(Ticket(subject="Important", description="Thing"))
        tid = ticket_audit.ticket.id
        return ticket_audit, z.tickets(id=tid), list(z.tickets.comments(ticket=tid))

    ticket_audit, fetched, comments = await in_thread(scenario)
    assert ticket_audit.ticket.subject == "Important"
    assert ticket_audit.ticket.description == "Thing"
    assert fetched.description == "Thing"
    assert [(c.body, c.public) for c in comments] == [("Thing", True)]
    assert ("Comment", "Thing") in [(e["type"], e.get("body")) for e in ticket_audit.audit.events]


async def test_zenpy_lists_comments_organizations_and_incremental_export(
    sim: SocSimulator, zenpy_client: Zenpy
) -> None:
    z = zenpy_client

    def scenario() -> tuple[list[str], list[str], list[int], int]:
        t = create(z)
        t2 = z.tickets(id=t.id)
        t2.comment = Comment(body="second", public=True)
        z.tickets.update(t2)
        bodies = [c.body for c in z.tickets.comments(ticket=t.id)]
        orgs = [o.name for o in z.organizations()]
        exported = [x.id for x in z.tickets.incremental(start_time=int(time.time()) - 3600)]
        audits = len(list(z.tickets.audits(ticket=t.id)))  # sends include=None (NOTES §5)
        return bodies, orgs, exported, audits

    bodies, orgs, exported, audits = await in_thread(scenario)
    assert audits == 2
    assert bodies == ["Host WS-12 beaconing to C2", "second"]
    assert orgs == ["ACME Corporation", "Globex Inc", "Initech LLC"]
    assert exported == [fixture.FIRST_TICKET_ID]


async def test_zenpy_reads_many_tickets_with_one_show_many(
    sim: SocSimulator, zenpy_client: Zenpy
) -> None:
    z = zenpy_client

    def scenario() -> tuple[list[int], list[int]]:
        made = [create(z, subject=f"Alert {n}").id for n in range(3)]
        # zenpy's idiom for show_many; 424242 is no ticket and is left out.
        read = [t.id for t in z.tickets(ids=[*made, 424242])]
        return made, read

    made, read = await in_thread(scenario)
    assert read == made


async def test_zenpy_sees_safe_update_conflict_and_not_found(
    sim: SocSimulator, zenpy_client: Zenpy
) -> None:
    z = zenpy_client

    def scenario() -> tuple[str, str, str]:
        t = create(z)
        stale = z.tickets(id=t.id)
        fresh = z.tickets(id=t.id)
        fresh.priority = "low"
        z.tickets.update(fresh)
        stale.safe_update = True
        stale.updated_stamp = stale.updated_at  # a string, as NOTES §5 advises
        stale.status = "solved"
        try:
            z.tickets.update(stale)
            conflict = "no error"
        except APIException as exc:
            conflict = str(exc)
        try:
            z.tickets(id=1)
            missing = "no error"
        except RecordNotFoundException as exc:
            missing = str(exc)
        return conflict, missing, z.tickets(id=t.id).status

    conflict, missing, status = await in_thread(scenario)
    assert "UpdateConflict" in conflict
    assert "RecordNotFound" in missing
    assert status == "new"


async def test_zenpy_waits_out_a_429_and_succeeds(sim: SocSimulator, zenpy_client: Zenpy) -> None:
    sim.faults.update({"rate_limit_next": 1, "retry_after": 1})
    ticket = await in_thread(lambda: create(zenpy_client))
    assert sim.faults.api_faults_injected == 1
    assert ticket.id in sim.state.tickets and len(sim.state.tickets) == 1


async def test_zenpy_manages_webhooks(sim: SocSimulator, zenpy_client: Zenpy) -> None:
    z = zenpy_client

    def scenario() -> tuple[str, list[str]]:
        hook = z.webhooks.create(
            Webhook(
                name="zenpy-made",
                endpoint="https://bridge.example/webhooks/soc",
                http_method="POST",
                request_format="json",
                status="active",
                subscriptions=["zen:event-type:ticket.created"],
            )
        )
        names = [w.name for w in z.webhooks.list()]
        return hook.id, names

    wid, names = await in_thread(scenario)
    assert wid in sim.webhooks.webhooks
    assert names == ["zenpy-made"]
