"""Echoes are recognised, never re-sent; concurrent changes are resolved by the policy."""

from __future__ import annotations

from daemon.simulators.harness import Bridge
from projections import kinds
from tests.support.tickets import soc_ticket_for


async def test_a_change_socbridge_wrote_comes_back_as_an_echo_not_a_ping_pong(
    bridge: Bridge,
) -> None:
    cw = await bridge.technician.create_ticket("Brute force on VPN")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    await bridge.analyst.set(soc["id"], priority="urgent")

    async def cw_urgent() -> bool:
        t = await bridge.technician.ticket(cw["id"])
        return t["priority"]["name"] == "Priority 1 - Emergency Response"

    await bridge.until(cw_urgent, "the SOC's priority on ConnectWise")

    async def echoed() -> bool:
        return any(
            e.type == kinds.ECHO_RECOGNISED
            and e.data.get("side") == "cw"
            and e.data.get("value") == "urgent"
            for e in await bridge.events(f"cw:{cw['id']}")
        )

    await bridge.until(echoed, "the ConnectWise write to come back as an echo")
    await bridge.settled()
    events = await bridge.events(f"cw:{cw['id']}")
    commands = [e.data["kind"] for e in events if e.type == kinds.COMMAND_ISSUED]
    # One create and one update to ConnectWise; nothing was sent back to the SOC.
    assert commands == ["soc.create_ticket", "cw.update_ticket"]


async def test_concurrent_priority_change_goes_to_the_soc_by_default(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket("Data exfiltration alert")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    await bridge.stop_daemon()  # neither side sees the other's change
    await bridge.technician.set(cw["id"], priority="Priority 4 - Schedule Maintenance")
    await bridge.analyst.set(soc["id"], priority="urgent")
    await bridge.start_daemon()

    async def resolved() -> bool:
        return bridge.engine.state.conflicts == 1

    await bridge.until(resolved, "the conflict to be recorded")
    await bridge.settled()
    cw_now = await bridge.technician.ticket(cw["id"])
    soc_now = await bridge.analyst.ticket(soc["id"])
    assert soc_now["priority"] == "urgent"
    assert cw_now["priority"]["name"] == "Priority 1 - Emergency Response"
    [conflict] = [
        e for e in await bridge.events(f"cw:{cw['id']}") if e.type == kinds.CONFLICT_RESOLVED
    ]
    assert conflict.data["policy"] == "soc" and conflict.data["winner"] == "soc"
    assert {conflict.data["value"], conflict.data["other_value"]} == {"urgent", "low"}
