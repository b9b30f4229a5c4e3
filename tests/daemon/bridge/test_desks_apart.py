"""Commands waiting on one desk never hold the other desk's back.

The outbox runs at most ``max_parallel`` commands at once per desk. When the SOC
answers slowly and a burst of updates for it fills its share, a change made in
the SOC still reaches ConnectWise at once, not after the SOC's writes.
"""

from __future__ import annotations

from daemon.simulators.harness import Bridge
from daemon.simulators.rehearsal import PRIORITY_MAPPING
from projections import kinds
from tests.support.tickets import soc_ticket_for

SLOW_S = 8.0


async def test_a_slow_soc_does_not_hold_connectwise_writes(bridge: Bridge) -> None:
    assert bridge.rehearsal is not None
    outbox = bridge.outbox
    tickets = [
        await bridge.technician.create_ticket(f"Slow SOC {n}")
        for n in range(outbox.max_parallel + 1)
    ]
    socs = [await soc_ticket_for(bridge, t["id"]) for t in tickets]
    await bridge.settled()
    faults = bridge.rehearsal.soc.faults
    faults.update({"latency": SLOW_S})
    for t in tickets:
        await bridge.technician.set(t["id"], priority=PRIORITY_MAPPING["urgent"])

    async def soc_full() -> bool:
        return len(outbox._running["soc"]) == outbox.max_parallel

    await bridge.until(soc_full, "the SOC's share of the outbox to fill", 10)
    faults.update({"latency": 0.0})  # requests already there still wait their 8 s
    delivered_before = await _soc_updates_delivered(bridge)
    await bridge.analyst.set(socs[0]["id"], priority="low")
    cw_id = tickets[0]["id"]

    async def copied() -> bool:
        ticket = await bridge.technician.ticket(cw_id)
        return bool(ticket["priority"]["name"] == PRIORITY_MAPPING["low"])

    await bridge.until(copied, "the SOC's change to reach ConnectWise", SLOW_S)
    # It went while the SOC's updates were still waiting for their answers.
    assert await _soc_updates_delivered(bridge) == delivered_before


async def _soc_updates_delivered(bridge: Bridge) -> int:
    return len([
        e async for e in bridge.store.read()
        if e.type == kinds.COMMAND_DELIVERED and e.data["kind"] == "soc.update_ticket"
    ])  # fmt: skip
