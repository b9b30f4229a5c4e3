"""``socbridge audit --fix`` beyond fields: one test per seeded divergence, on the whole bridge.

Each test runs both simulators and the daemon on loopback, seeds one kind of
trouble through the simulators' fault knobs (or a deletion), shows the audit
finds it, runs ``--fix`` as an operator would (the audit opens the daemon's
SQLite file itself), waits for the daemon's outbox to deliver the repairs,
and checks both sides converged and a second audit is clean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.cli.audit import run_audit
from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.remote import RetryPolicy
from daemon.connectors.soc.desk import SocDesk
from daemon.connectors.soc.poller import WATERMARK_STREAM as SOC_POLLER_STREAM
from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.harness import Bridge
from projections import kinds
from tests.support.cli import audit_args as args
from tests.support.tickets import cw_ticket_for, soc_ticket_for

URGENT = "Priority 1 - Emergency Response"


async def audited(bridge: Bridge, **over: Any) -> dict[str, Any]:
    assert bridge.config is not None
    return await run_audit(bridge.config.store.path, bridge.config, args(**over))


def kinds_found(doc: dict[str, Any]) -> set[str]:
    return {f["kind"] for f in doc["findings"] if f["severity"] == "attention"}


async def logged(bridge: Bridge, type_: str, link_id: str) -> bool:
    return any(e.type == type_ for e in await bridge.events(link_id))


async def clean_again(bridge: Bridge) -> None:
    await bridge.settled()
    again = await audited(bridge, remote=True, fix=True)
    assert not again["needs_attention"], again["findings"]
    assert again["repairs"] == []  # nothing left to repair


async def test_fix_links_a_partner_that_landed_though_its_create_was_abandoned(
    tmp_path: Path,
) -> None:
    """The SOC created the ticket but its reply was lost, and the outbox gave up: the
    re-sent create finds it by its external_id instead of creating a second one."""
    # Pollers slowed down, so the one lost reply armed below is the create's, not a poll's.
    async with Bridge(tmp_path, poll_s=30) as bridge:
        await lost_reply_then_fix(bridge)


async def lost_reply_then_fix(bridge: Bridge) -> None:
    assert bridge.rehearsal is not None
    await bridge.settled()
    # The SOC poller's first pass (at start) must be over before the fault is armed, or
    # its read gets the lost reply instead of the create: on an empty desk it is one
    # export page, then its cursor recorded.
    await bridge.until(
        lambda: bridge.store.last_in_stream(SOC_POLLER_STREAM), "the SOC poller's first pass"
    )
    # The daemon tries once (no client retry, one outbox attempt): a lost reply gives up.
    bridge.outbox.max_attempts = 1
    soc = bridge.outbox.desks["soc"]
    assert isinstance(soc, SocDesk)
    soc.client.remote.retry = RetryPolicy(max_attempts=1)
    bridge.rehearsal.soc.faults.update({"error_after_commit_next": 1})
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
    link_id = f"cw:{cw['id']}"
    await bridge.until(lambda: logged(bridge, kinds.COMMAND_ABANDONED, link_id), "the give-up")
    # Meanwhile the technician raises the priority: its write waits for the partner.
    await bridge.technician.set(cw["id"], priority=URGENT)
    await bridge.until(lambda: _pending(bridge, link_id, "soc.update_ticket"), "the wait")
    bridge.outbox.max_attempts = None
    soc.client.remote.retry = RetryPolicy()

    doc = await audited(bridge)
    assert {"command-abandoned", "linked-one-side"} <= kinds_found(doc)
    fixed = await audited(bridge, fix=True)
    decided = [r for r in fixed["repairs"] if r["type"] == kinds.REPAIR_DECIDED]
    assert [(r["repair"], r["link_id"]) for r in decided] == [
        ("reissue", link_id),  # the create, marker looked up first
        ("reissue", link_id),  # the update that waited, sent again after it
    ]

    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.until(
        lambda: _soc_priority(bridge, soc["id"], "urgent"), "the waiting update to land"
    )
    marked = [t for t in await bridge.analyst.tickets()
              if t.get("external_id") == f"socbridge:cw:{cw['id']}"]  # fmt: skip
    assert len(marked) == 1  # linked to the ticket that landed, not created twice
    assert bridge.engine.state.links[link_id].soc_id == soc["id"]
    await clean_again(bridge)


async def test_fix_sends_a_parked_create_again(bridge: Bridge) -> None:
    """ConnectWise refused the create outright (422): it is parked, not given up, and
    once the rule is fixed the fix sends it again (marker looked up first): it lands once."""
    assert bridge.rehearsal is not None
    bridge.rehearsal.cw.faults.api.append(
        ApiFault(422, 1, method="POST", path_contains="service/tickets")
    )
    soc = await bridge.analyst.create_ticket("Phishing at ACME", "A user clicked a link")
    link_id = f"soc:{soc['id']}"
    await bridge.until(lambda: logged(bridge, kinds.COMMAND_PARKED, link_id), "the refusal")

    doc = await audited(bridge)
    assert "command-parked" in kinds_found(doc)
    fixed = await audited(bridge, fix=True)
    decided = [r for r in fixed["repairs"] if r["type"] == kinds.REPAIR_DECIDED]
    assert [(r["repair"], r["link_id"]) for r in decided] == [("retry", link_id)]
    retried = [r["kind"] for r in fixed["repairs"] if r["type"] == kinds.COMMAND_RETRIED]
    assert retried == ["cw.create_ticket"]
    cw = await cw_ticket_for(bridge, soc["id"])
    await bridge.settled()
    assert len(await bridge.technician.tickets(f"externalXRef = 'socbridge:soc:{soc['id']}'")) == 1
    assert bridge.engine.state.links[link_id].cw_id == cw["id"]
    await clean_again(bridge)


async def test_fix_repairs_an_abandoned_update_by_its_policy(bridge: Bridge) -> None:
    """A priority update was given up (an attempt cap, as an older socbridge had): not
    re-sent blindly, but the field the sides still disagree on is repaired by its policy
    (the SOC wins priority)."""
    assert bridge.rehearsal is not None
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    link_id = f"cw:{cw['id']}"
    bridge.outbox.max_attempts = 1
    desk = bridge.outbox.desks["cw"]
    assert isinstance(desk, ConnectWiseDesk)
    desk.client.remote.retry = RetryPolicy(max_attempts=1)
    bridge.rehearsal.cw.faults.api.append(ApiFault(503, 1, method="PATCH"))
    await bridge.analyst.set(soc["id"], priority="urgent")
    await bridge.until(lambda: logged(bridge, kinds.COMMAND_ABANDONED, link_id), "the give-up")
    bridge.outbox.max_attempts = None
    desk.client.remote.retry = RetryPolicy()
    await bridge.settled()

    doc = await audited(bridge)
    assert {"command-abandoned", "divergent"} <= kinds_found(doc)
    fixed = await audited(bridge, fix=True)
    decided = [r for r in fixed["repairs"] if r["type"] == kinds.REPAIR_DECIDED]
    assert [r.get("repair") or r["field"] for r in decided] == ["acknowledge", "priority"]

    async def landed() -> bool:
        return bool((await bridge.technician.ticket(cw["id"]))["priority"]["name"] == URGENT)

    await bridge.until(landed, "the repair to reach ConnectWise")
    await clean_again(bridge)


async def test_fix_unlinks_a_link_whose_partner_ticket_is_gone(bridge: Bridge) -> None:
    """The SOC ticket was deleted: the link is unlinked with the reason (as a deletion in
    ConnectWise does), not re-created, and never linked again."""
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    link_id = f"cw:{cw['id']}"
    analyst = bridge.analyst
    async with analyst.session.delete(
        f"{analyst.base}/tickets/{soc['id']}.json", headers=analyst.headers
    ) as resp:
        assert resp.status == 204
    await bridge.settled()

    doc = await audited(bridge, remote=True)
    assert "remote-missing" in kinds_found(doc)
    fixed = await audited(bridge, remote=True, fix=True)
    decided = [r for r in fixed["repairs"] if r["type"] == kinds.REPAIR_DECIDED]
    assert [r["repair"] for r in decided] == ["unlink"]
    assert "is gone" in decided[0]["reason"]
    await bridge.until(lambda: _unlinked(bridge, link_id), "the unlink to be folded")
    assert "is gone" in bridge.engine.state.links[link_id].unlinked_reason
    before = len(await analyst.tickets())
    await bridge.technician.set(cw["id"], priority=URGENT)  # not synced any more (R3)
    await clean_again(bridge)
    assert len(await analyst.tickets()) == before  # nothing re-created


async def _pending(bridge: Bridge, link_id: str, kind: str) -> bool:
    return any(c.link_id == link_id and c.kind == kind for c in bridge.engine.state.outbox.values())


async def _soc_priority(bridge: Bridge, soc_id: int, priority: str) -> bool:
    return bool((await bridge.analyst.ticket(soc_id))["priority"] == priority)


async def _unlinked(bridge: Bridge, link_id: str) -> bool:
    return bool(bridge.engine.state.links[link_id].state == "unlinked")


async def test_fix_relinks_marked_tickets_the_log_has_no_link_for(bridge: Bridge) -> None:
    """A SOC ticket carries the marker of a ConnectWise ticket (socbridge made it, by an
    older log's account) but this log never linked them: linked again, fields repaired."""
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07", status="New",
                                               priority=URGENT)  # fmt: skip
    doc = await bridge.analyst._call("POST", "tickets.json", {"ticket": {
        "subject": "Beaconing from ACME-WS07", "comment": {"body": "from ConnectWise"},
        "organization_id": 9001, "priority": "low", "external_id": f"socbridge:cw:{cw['id']}",
    }})  # fmt: skip
    soc = doc["ticket"]
    await bridge.settled()
    link_id = f"cw:{cw['id']}"
    assert link_id not in bridge.engine.state.links  # the daemon leaves marked tickets be

    found = await audited(bridge, remote=True)
    assert "marker-unlinked" in kinds_found(found)
    fixed = await audited(bridge, remote=True, fix=True)
    decided = [r for r in fixed["repairs"] if r["type"] == kinds.REPAIR_DECIDED]
    assert [r.get("repair") or r["field"] for r in decided] == ["relink", "priority"]
    # The SOC wins priority (the configured policy): ConnectWise gets "low".
    await bridge.until(
        lambda: _priority_is(bridge, cw["id"], "Priority 4 - Schedule Maintenance"),
        "the relinked pair's priority to agree",
    )
    assert bridge.engine.state.links[link_id].soc_id == soc["id"]
    await bridge.analyst.set(soc["id"], status="solved")  # and they sync again

    async def solved() -> bool:
        return bool((await bridge.technician.ticket(cw["id"]))["status"]["name"] == "Solved")

    await bridge.until(solved, "the relinked pair to sync")
    await clean_again(bridge)


async def _priority_is(bridge: Bridge, cw_id: int, name: str) -> bool:
    return bool((await bridge.technician.ticket(cw_id))["priority"]["name"] == name)
