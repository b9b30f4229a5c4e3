"""SOC writes are conditional on the ticket being unchanged since it was last seen.

A priority update to a SOC ticket nobody touched since it was last seen is one
``safe_update`` PUT, with no read before it. When the ticket changed and the
daemon has not seen it yet (an analyst's comment whose webhook was lost, before
the next poll), the SOC answers 409 and the outbox reads the ticket and checks
it as before, then writes.
"""

from __future__ import annotations

from pathlib import Path

from daemon.service.app import METRICS
from daemon.simulators.harness import Bridge
from daemon.simulators.rehearsal import PRIORITY_MAPPING
from tests.support.tickets import soc_ticket_for


def soc_writes(bridge: Bridge) -> dict[str, float]:
    registry = bridge.app[METRICS].registry
    return {
        method: registry.get_sample_value(
            "socbridge_remote_requests_total",
            {"side": "soc", "method": method, "purpose": "write"},
        )
        or 0.0
        for method in ("GET", "PUT")
    }


async def test_an_unchanged_ticket_is_written_without_a_read_and_a_changed_one_is_checked(
    tmp_path: Path,
) -> None:
    # Polls slowed down: the lost webhook's change stays unseen until the write.
    async with Bridge(tmp_path, poll_s=30) as bridge:
        await _scenario(bridge)


async def _scenario(bridge: Bridge) -> None:
    assert bridge.rehearsal is not None
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()

    async def soc_priority(value: str) -> bool:
        return bool((await bridge.analyst.ticket(soc["id"]))["priority"] == value)

    before = soc_writes(bridge)
    await bridge.technician.set(cw["id"], priority=PRIORITY_MAPPING["urgent"])
    await bridge.until(lambda: soc_priority("urgent"), "the change to reach the SOC")
    await bridge.settled()
    after = soc_writes(bridge)
    assert after["PUT"] - before["PUT"] == 1
    assert after["GET"] - before["GET"] == 0  # no read before the write

    bridge.rehearsal.soc.faults.update({"webhook_drop_next": 1})
    await bridge.analyst.comment(soc["id"], "looking into it")  # moves updated_at, unseen
    before = soc_writes(bridge)
    await bridge.technician.set(cw["id"], priority=PRIORITY_MAPPING["low"])
    await bridge.until(lambda: soc_priority("low"), "the second change to reach the SOC")
    await bridge.settled()
    after = soc_writes(bridge)
    # The conditional PUT was refused (409), then the ticket read, checked and written.
    assert after["GET"] - before["GET"] == 1
    assert after["PUT"] - before["PUT"] == 2
