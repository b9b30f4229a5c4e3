"""A burst of changes queued behind a SOC outage: only the latest value is written.

Each update the burst decides waits in the ticket's lane while the SOC answers
503. Once it answers again, the outbox sends the one it had tried (it may have
landed) and supersedes every untried update a later one overwrites, recording
``outbox.command.superseded`` with its successor: a handful of writes instead of
one per change, nothing lost, nothing doubled, the desks agree.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from daemon.cli.audit import run_audit
from daemon.simulators.harness import Bridge
from daemon.simulators.rehearsal import PRIORITY_MAPPING
from projections import kinds
from tests.daemon.bridge.test_resilience import fast_retries
from tests.support.cli import audit_args
from tests.support.tickets import soc_ticket_for

#: One change a second: each is decided on its own (same-second changes are told apart by
#: a re-read instead, which this test is not about); the last one to "urgent".
ORDER = ["high", "normal", "low", "high", "low", "urgent"]


async def test_a_burst_behind_an_outage_writes_the_latest_value_only(bridge: Bridge) -> None:
    assert bridge.rehearsal is not None
    await fast_retries(bridge)
    cw = await bridge.technician.create_ticket("Burst during a SOC outage")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    link_id = f"cw:{cw['id']}"
    bridge.rehearsal.soc.faults.update({"error_ratio": 1.0, "error_status": 503})
    for name in ORDER:
        await bridge.technician.set(cw["id"], priority=PRIORITY_MAPPING[name])
        await asyncio.sleep(1.05)

    async def queued() -> bool:
        updates = [c for c in bridge.engine.state.outbox.values()
                   if c.link_id == link_id and c.kind == "soc.update_ticket"]  # fmt: skip
        return len(updates) == len(ORDER) and any(c.attempts for c in updates)

    await bridge.until(queued, "updates to queue behind the failing one", 30)
    bridge.rehearsal.soc.faults.update({"error_ratio": 0.0})

    async def urgent() -> bool:
        return bool((await bridge.analyst.ticket(soc["id"]))["priority"] == "urgent")

    await bridge.until(urgent, "the last value to reach the SOC", 60)
    await bridge.settled(60)
    events = [e async for e in bridge.store.read() if e.ticket == link_id]
    issued = {
        e.event_id
        for e in events
        if e.type == kinds.COMMAND_ISSUED and e.data["kind"] == "soc.update_ticket"
    }
    ends: Counter[str] = Counter()
    superseded = []
    for e in events:
        if e.data.get("command_id") in issued and e.type in (
            kinds.COMMAND_DELIVERED, kinds.COMMAND_SUPERSEDED, kinds.COMMAND_ABANDONED,
        ):  # fmt: skip
            ends[e.data["command_id"]] += 1
            if e.type == kinds.COMMAND_SUPERSEDED:
                superseded.append(e)
    # Each update ended exactly once: delivered or superseded, none given up.
    assert set(ends) == issued and set(ends.values()) == {1}
    assert not any(e.type == kinds.COMMAND_ABANDONED for e in events)
    delivered = [e for e in events if e.type == kinds.COMMAND_DELIVERED
                 and e.data["command_id"] in issued]  # fmt: skip
    # The one tried during the outage (it may have landed) and the last: nothing between.
    assert len(issued) == len(ORDER) and len(delivered) == 2
    assert len(superseded) == len(ORDER) - 2
    # Each names a later update of the same ticket as its successor.
    order = {e.event_id: e.position for e in events if e.event_id in issued}
    for e in superseded:
        assert order[e.data["successor"]] > order[e.data["command_id"]]
    assert bridge.config is not None
    doc = await run_audit(bridge.config.store.path, bridge.config, audit_args())
    assert not doc["needs_attention"], doc["findings"]


async def test_an_update_waiting_for_the_rate_limit_is_superseded_by_one_decided_meanwhile(
    bridge: Bridge,
) -> None:
    """The outbox settles what an update writes only once the desk's rate limit has room:
    a change made while the update waited its turn is written instead of it, not after."""
    # Twelve updates at the SOC's 5 requests/s: the last waits its turn for about 2 s.
    tickets = [await bridge.technician.create_ticket(f"Queued write {n}") for n in range(12)]
    socs = [await soc_ticket_for(bridge, t["id"]) for t in tickets]
    await bridge.settled()
    for t in tickets:
        await bridge.technician.set(t["id"], priority=PRIORITY_MAPPING["high"])
    last = tickets[-1]
    link_id = f"cw:{last['id']}"

    async def queued() -> bool:
        return any(c.link_id == link_id and c.kind == "soc.update_ticket"
                   for c in bridge.engine.state.outbox.values())  # fmt: skip

    await bridge.until(queued, "the last ticket's update to wait its turn", 10)
    await asyncio.sleep(1.05)  # a newer second: a change, not a same-second ambiguity
    await bridge.technician.set(last["id"], priority=PRIORITY_MAPPING["low"])

    async def written() -> bool:
        return bool((await bridge.analyst.ticket(socs[-1]["id"]))["priority"] == "low")

    await bridge.until(written, "the later value to reach the SOC", 20)
    await bridge.settled()
    events = await bridge.events(link_id)
    updates = [e for e in events if e.type == kinds.COMMAND_ISSUED
               and e.data["kind"] == "soc.update_ticket"]  # fmt: skip
    ends = {e.data["command_id"]: e.type for e in events if e.type in kinds.OUTCOMES}
    # The first update never went out: superseded while it waited; only "low" was written.
    assert [ends[u.event_id] for u in updates] == [
        kinds.COMMAND_SUPERSEDED, kinds.COMMAND_DELIVERED,
    ]  # fmt: skip
    assert [u.data["params"]["fields"]["priority"] for u in updates] == ["high", "low"]
