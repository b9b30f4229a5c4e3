"""Waiting for the partner ticket socbridge creates on the other desk."""

from __future__ import annotations

from daemon.simulators.harness import Bridge


async def soc_ticket_for(bridge: Bridge, cw_id: int) -> dict:  # type: ignore[type-arg]
    async def found() -> dict | None:  # type: ignore[type-arg]
        for t in await bridge.analyst.tickets():
            if t.get("external_id") == f"socbridge:cw:{cw_id}":
                return t
        return None

    return await bridge.until(found, f"a SOC ticket for ConnectWise ticket {cw_id}")


async def cw_ticket_for(bridge: Bridge, soc_id: int) -> dict:  # type: ignore[type-arg]
    async def found() -> dict | None:  # type: ignore[type-arg]
        tickets = await bridge.technician.tickets(f"externalXRef = 'socbridge:soc:{soc_id}'")
        return tickets[0] if tickets else None

    return await bridge.until(found, f"a ConnectWise ticket for SOC ticket {soc_id}")
