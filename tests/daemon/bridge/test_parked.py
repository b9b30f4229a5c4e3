"""A desk that refuses a ticket's writes for good: the command is parked, not given up.

ConnectWise answers 422 (a PSA validation rule) to every write of one ticket.
The first write is parked with the remote's reason; the ticket's later writes
to ConnectWise wait behind it, in order, while other tickets flow. The audit
and ``socbridge retry --list`` name it, ``/metrics`` counts it. Once the rule
is fixed, one ``audit --fix`` lets it go and everything lands in order, and a
second audit is clean; ``retry`` and ``skip`` do the same by hand while the
daemon runs (a second process on the same SQLite file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from daemon.cli.audit import render, run_audit
from daemon.outbox.worker import definitive
from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.harness import Bridge
from projections import kinds
from projections.state import PendingCommand
from tests.support.cli import audit_args, run_socbridge
from tests.support.tickets import soc_ticket_for

URGENT = "Priority 1 - Emergency Response"


def refuse_writes(bridge: Bridge, cw_id: int) -> list[ApiFault]:
    """ConnectWise refuses every write of one ticket (its updates and its notes)."""
    assert bridge.rehearsal is not None
    faults = [
        ApiFault(422, 1_000_000, method=method, path_contains=f"service/tickets/{cw_id}")
        for method in ("PATCH", "POST")
    ]
    bridge.rehearsal.cw.faults.api.extend(faults)
    return faults


async def parked(bridge: Bridge, link_id: str) -> list[PendingCommand]:
    return [
        c
        for c in bridge.engine.state.outbox.values()
        if c.link_id == link_id and c.parked is not None
    ]


async def audited(bridge: Bridge, **over: Any) -> dict[str, Any]:
    assert bridge.config is not None
    return await run_audit(bridge.config.store.path, bridge.config, audit_args(**over))


async def cw_has(bridge: Bridge, cw_id: int, priority: str, notes: list[str]) -> bool:
    ticket = await bridge.technician.ticket(cw_id)
    texts = [n["text"] for n in await bridge.technician.notes(cw_id)]
    found = [next((i for i, t in enumerate(texts) if note in t), -1) for note in notes]
    return (
        bool(ticket["priority"]["name"] == priority) and -1 not in found and found == sorted(found)
    )


async def metric(bridge: Bridge, name: str) -> float:
    assert bridge.config is not None
    url = f"http://127.0.0.1:{bridge.config.server.port}/metrics"
    async with bridge.session.get(url) as resp:
        text = await resp.text()
    [line] = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


async def two_linked(bridge: Bridge) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
    other = await bridge.technician.create_ticket("Phishing at ACME")
    soc = await soc_ticket_for(bridge, cw["id"])
    await soc_ticket_for(bridge, other["id"])
    await bridge.settled()
    return cw, other, soc


async def test_a_refused_write_parks_its_lane_and_one_fix_converges(bridge: Bridge) -> None:
    cw, other, soc = await two_linked(bridge)
    link_id = f"cw:{cw['id']}"
    refuse_writes(bridge, cw["id"])
    await bridge.analyst.set(soc["id"], priority="urgent")
    for n in range(3):
        await bridge.analyst.comment(soc["id"], f"analyst reply {n}")
    [held] = await bridge.until(lambda: parked(bridge, link_id), "the refused write to park")
    assert held.parked is not None and held.parked.remote_status == "422"
    assert "422" in held.parked.message
    # The ticket's later ConnectWise writes wait behind it, in order: none were attempted.
    await bridge.until(
        lambda: _waiting(bridge, link_id, 4), "the priority and three replies to wait"
    )
    # Other tickets flow meanwhile.
    other_soc = await soc_ticket_for(bridge, other["id"])
    await bridge.analyst.set(other_soc["id"], priority="urgent")
    await bridge.until(lambda: cw_has(bridge, other["id"], URGENT, []), "the other ticket")

    assert await metric(bridge, "socbridge_parked_commands") == 1
    doc = await audited(bridge)
    [finding] = [f for f in doc["findings"] if f["kind"] == "command-parked"]
    assert finding["severity"] == "attention" and "3 more" in finding["detail"]
    assert finding["data"]["command_id"] == held.command_id
    assert bridge.config is not None
    listed = run_socbridge("retry", "--list", "--json", "--db", str(bridge.config.store.path),
                           entry=True)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    [row] = orjson.loads(listed.stdout)["parked"]
    assert row["command_id"] == held.command_id and row["waiting_behind"] == 3

    # The PSA rule is fixed: one --fix pass lets the command go, and the rest follow.
    bridge.rehearsal.cw.faults.api.clear()  # type: ignore[union-attr]
    fixed = await audited(bridge, fix=True)
    decided = [r for r in fixed["repairs"] if r["type"] == kinds.REPAIR_DECIDED]
    assert [r["repair"] for r in decided] == ["retry"]
    assert [r["command_id"] for r in fixed["repairs"] if r["type"] == kinds.COMMAND_RETRIED] == [
        held.command_id
    ]

    class Out:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

    out = Out()
    render(fixed, out)  # type: ignore[arg-type]
    assert "--fix appended 1 repairs" in out.text and "go again" in out.text
    replies = [f"analyst reply {n}" for n in range(3)]
    await bridge.until(lambda: cw_has(bridge, cw["id"], URGENT, replies), "everything to land")
    await bridge.settled()
    again = await audited(bridge, fix=True)
    assert not again["needs_attention"], again["findings"]
    assert again["repairs"] == []
    assert await metric(bridge, "socbridge_parked_commands") == 0


async def _waiting(bridge: Bridge, link_id: str, n: int) -> bool:
    lane = [c for c in bridge.engine.state.outbox.values()
            if c.link_id == link_id and c.target == "cw"]  # fmt: skip
    return len(lane) >= n


async def test_retry_and_skip_work_while_the_daemon_runs(bridge: Bridge, tmp_path: Path) -> None:
    cw, _, soc = await two_linked(bridge)
    link_id = f"cw:{cw['id']}"
    assert bridge.config is not None
    db = str(bridge.config.store.path)
    refuse_writes(bridge, cw["id"])
    await bridge.analyst.comment(soc["id"], "a reply the PSA refuses")
    [first] = await bridge.until(lambda: parked(bridge, link_id), "the note to park")
    await bridge.analyst.comment(soc["id"], "a reply after it")
    await bridge.until(lambda: _waiting(bridge, link_id, 2), "the next reply to wait behind")

    not_parked = run_socbridge("retry", "nope", "--db", db, entry=True)
    assert not_parked.returncode == 2
    assert b"no pending command nope" in not_parked.stderr
    assert b"nothing was changed" in not_parked.stderr

    skipped = run_socbridge("skip", first.command_id, "--db", db, "--reason", "spam", entry=True)
    assert skipped.returncode == 0, skipped.stderr
    assert b"will not be delivered" in skipped.stdout and b"refuses" in skipped.stdout

    # The reply behind it is tried next, and parks on the same rule.
    async def second_parked() -> list[PendingCommand]:
        return [c for c in await parked(bridge, link_id) if c.command_id != first.command_id]

    [second] = await bridge.until(second_parked, "the next reply to be tried and park")
    assert first.command_id not in bridge.engine.state.outbox

    bridge.rehearsal.cw.faults.api.clear()  # type: ignore[union-attr]
    retried = run_socbridge("retry", "--ticket", f"cw:{cw['id']}", "--db", db, entry=True)
    assert retried.returncode == 0, retried.stderr
    assert second.command_id.encode() in retried.stdout
    await bridge.until(
        lambda: cw_has(bridge, cw["id"], "Priority 3 - Normal Response", ["a reply after it"]),
        "the retried reply to land",
    )
    await bridge.settled()
    texts = [n["text"] for n in await bridge.technician.notes(cw["id"])]
    assert not any("a reply the PSA refuses" in t for t in texts)
    events = [e async for e in bridge.store.read() if e.ticket == link_id]
    types = [e.type for e in events]
    assert kinds.COMMAND_SKIPPED in types and kinds.COMMAND_RETRIED in types
    skip = next(e for e in events if e.type == kinds.COMMAND_SKIPPED)
    assert skip.data["reason"] == "spam" and skip.data["command_id"] == first.command_id
    doc = await audited(bridge)
    assert "command-skipped" in {f["kind"] for f in doc["findings"]}
    nothing = run_socbridge("retry", "--all", "--db", db, entry=True)
    assert nothing.returncode == 0 and b"nothing is parked" in nothing.stdout


def test_only_a_definitive_refusal_parks() -> None:
    def command(kind: str) -> PendingCommand:
        return PendingCommand("c1", kind, "cw:1", None, {}, 1)

    update, note = command("cw.update_ticket"), command("cw.add_note")
    assert [s for s in (400, 401, 403, 404, 409, 410, 422, 429, 500, 503)
            if definitive(note, s)] == [400, 403, 404, 409, 410, 422]  # fmt: skip
    # An update's 409 is its optimistic lock losing a race: read again and retried.
    assert not definitive(update, 409) and definitive(update, 422)
