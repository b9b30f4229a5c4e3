"""A burst of changes and notes while the SOC answers 503 for 30 s converges once it
answers again: every ticket's last priority reaches it, every note exactly once, and
every command ends exactly once (delivered, or superseded by a later write).

Real daemon, real HTTP over loopback, the simulators' default rate caps and the
outbox's default backoff: what an MSP sees when the SOC desk has an outage in the
middle of a technician's busy minute.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from daemon.cli.audit import run_audit
from daemon.simulators.harness import Bridge
from daemon.simulators.rehearsal import PRIORITY_MAPPING
from projections import kinds
from tests.support.cli import audit_args
from tests.support.tickets import soc_ticket_for

pytestmark = pytest.mark.slow

TICKETS = 4
CHANGES = 25  # per ticket, as fast as the simulator takes them
NOTE_EVERY = 10
OUTAGE_S = 30.0
CYCLE = ["high", "normal", "low", "urgent"]


async def test_a_burst_during_a_soc_outage_converges_with_nothing_lost_or_doubled(
    bridge: Bridge,
) -> None:
    assert bridge.rehearsal is not None
    tickets = [await bridge.technician.create_ticket(f"Outage burst {n}") for n in range(TICKETS)]
    socs = [await soc_ticket_for(bridge, t["id"]) for t in tickets]
    await bridge.settled()
    links = {f"cw:{t['id']}" for t in tickets}

    bridge.rehearsal.soc.faults.update({"error_ratio": 1.0, "error_status": 503})
    down_at = time.monotonic()
    notes: dict[int, list[str]] = {t["id"]: [] for t in tickets}

    async def technician(cw_id: int) -> None:
        for n in range(CHANGES):
            await bridge.technician.set(cw_id, priority=PRIORITY_MAPPING[CYCLE[n % len(CYCLE)]])
            if n % NOTE_EVERY == NOTE_EVERY - 1:
                text = f"outage note {cw_id}-{n}"
                await bridge.technician.note(cw_id, text)
                notes[cw_id].append(text)

    await asyncio.gather(*(technician(t["id"]) for t in tickets))
    last = CYCLE[(CHANGES - 1) % len(CYCLE)]

    async def queued() -> bool:
        waiting = [c for c in bridge.engine.state.outbox.values() if c.target == "soc"]
        return any(c.attempts for c in waiting) and any(c.kind == "soc.add_comment"
                                                        for c in waiting)  # fmt: skip

    await bridge.until(queued, "SOC writes to wait behind the outage", OUTAGE_S)
    # The outage lasts its 30 s, however quickly the burst was made.
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    bridge.rehearsal.soc.faults.update({"error_ratio": 0.0})

    async def agreed() -> bool:
        for t, soc in zip(tickets, socs, strict=True):
            if (await bridge.analyst.ticket(soc["id"]))["priority"] != last:
                return False
            bodies = [c["body"] for c in await bridge.analyst.comments(soc["id"])]
            if any(not any(text in b for b in bodies) for text in notes[t["id"]]):
                return False
        return True

    await bridge.until(agreed, "the SOC to show every last priority and every note", 120)
    await bridge.settled(60)

    # Nothing doubled: each note is on its SOC ticket once.
    for t, soc in zip(tickets, socs, strict=True):
        bodies = [c["body"] for c in await bridge.analyst.comments(soc["id"])]
        for text in notes[t["id"]]:
            assert sum(text in b for b in bodies) == 1, (text, bodies)
    # Each SOC command ended exactly once: delivered, or superseded by a later update.
    events = [e async for e in bridge.store.read() if e.ticket in links]
    issued = {e.event_id: e.data["kind"] for e in events
              if e.type == kinds.COMMAND_ISSUED and e.data["kind"].startswith("soc.")}  # fmt: skip
    ends: Counter[str] = Counter()
    for e in events:
        if e.data.get("command_id") in issued and e.type in (
            kinds.COMMAND_DELIVERED, kinds.COMMAND_SUPERSEDED, kinds.COMMAND_ABANDONED,
            kinds.COMMAND_PARKED,
        ):  # fmt: skip
            assert e.type != kinds.COMMAND_ABANDONED and e.type != kinds.COMMAND_PARKED, e
            if e.type == kinds.COMMAND_SUPERSEDED:
                assert issued[e.data["command_id"]] == "soc.update_ticket"  # never a note
            ends[e.data["command_id"]] += 1
    assert set(ends) == set(issued) and set(ends.values()) == {1}
    delivered_notes = [e for e in events if e.type == kinds.COMMAND_DELIVERED
                       and e.data["kind"] == "soc.add_comment"]  # fmt: skip
    assert len(delivered_notes) == sum(len(v) for v in notes.values())
    assert bridge.config is not None
    doc = await run_audit(bridge.config.store.path, bridge.config, audit_args())
    assert not doc["needs_attention"], doc["findings"]
