"""The Problems page beyond commands: the last 24 h's conflicts and ambiguity storms."""

from __future__ import annotations

import aiohttp

from daemon.console.activity import STORM_READS, WINDOW_S, Activity
from daemon.simulators.harness import Bridge
from eventstore import RecordedEvent
from projections import kinds
from tests.daemon.bridge.test_parked import two_linked

PRIORITIES = ["Priority 2 - Quick Response", "Priority 4 - Schedule Maintenance"]


async def problems_page(bridge: Bridge) -> str:
    assert bridge.console_url is not None
    async with aiohttp.ClientSession() as http, http.get(bridge.console_url + "problems") as r:
        assert r.status == 200
        return await r.text()


async def test_a_conflict_and_a_storm_of_same_second_changes_are_listed(bridge: Bridge) -> None:
    cw, other, soc = await two_linked(bridge)
    # Both desks change the priority while the daemon is down: a conflict at its start.
    await bridge.stop_daemon()
    await bridge.technician.set(cw["id"], priority=PRIORITIES[1])
    await bridge.analyst.set(soc["id"], priority="high")
    await bridge.start_daemon()
    await bridge.until(lambda: _true(bridge.engine.state.conflicts > 0), "the conflict")
    # Another ticket's priority flips many times within a second or two: each change
    # arrives in the same second as the last known one, and sync reads the ticket again.
    for n in range(3 * STORM_READS):
        await bridge.technician.set(other["id"], priority=PRIORITIES[n % 2])
    await bridge.settled(deadline_s=60)

    page = await problems_page(bridge)
    assert "<strong>conflict</strong>" in page and "Priority conflict" in page
    assert "<strong>ambiguity storm</strong>" in page and f"cw:{other['id']}" in page
    assert "Re-read both sides" in page


async def _true(value: bool) -> bool:
    return value


def _event(position: int, type_: str, at: str, **data: object) -> RecordedEvent:
    return RecordedEvent(
        position, f"e{position}", "link:cw:1", position, type_, 1, "acme", "cw:1", None, None,
        "socbridge.sync", at, at, {"link_id": "cw:1", **data}, "",
    )  # fmt: skip


def test_what_is_older_than_the_window_is_forgotten() -> None:
    activity = Activity()
    now = 1_800_000_000.0
    old, new = "2027-01-14T07:59:00+00:00", "2027-01-15T07:00:00+00:00"  # now: 08:00
    activity.observe(_event(1, kinds.CONFLICT_RESOLVED, old))
    activity.observe(_event(2, kinds.CONFLICT_RESOLVED, new))
    for n in range(STORM_READS - 1):
        activity.observe(_event(10 + n, kinds.OBSERVATION_IGNORED, new, reason="ambiguous"))
    activity.observe(_event(30, kinds.OBSERVATION_IGNORED, new, reason="unchanged"))
    assert [e.position for e in activity.conflicts(now)] == [2]
    assert activity.storms(now) == []  # one short of a storm; "unchanged" does not count
    activity.observe(_event(40, kinds.OBSERVATION_IGNORED, new, reason="ambiguous"))
    [storm] = activity.storms(now)
    assert storm.count == STORM_READS and storm.link_id == "cw:1" and storm.last.position == 40
    assert activity.storms(now + WINDOW_S) == [] and activity.conflicts(now + WINDOW_S) == []


async def test_the_overview_says_which_desk_is_down_since_when_and_when_it_is_back(
    bridge: Bridge,
) -> None:
    assert bridge.rehearsal is not None and bridge.console_url is not None
    bridge.rehearsal.soc.faults.update({"error_ratio": 1.0, "error_status": 503})

    async def overview() -> str:
        async with aiohttp.ClientSession() as http, http.get(bridge.console_url or "") as r:
            return await r.text()

    async def down() -> str | None:
        page = await overview()
        return page if "SOC desk is not reachable: unavailable (HTTP 503) since" in page else None

    page = await bridge.until(down, "the overview to say the SOC desk is down")
    assert 'class="verdict bad"' in page and "ConnectWise</td>\n<td>reachable since" in page
    bridge.rehearsal.soc.faults.update({"error_ratio": 0.0})

    async def back() -> bool:
        page = await overview()
        return "SOC desk</td>\n<td>reachable since" in page and "Healthy" in page

    await bridge.until(back, "the overview to say the SOC desk is back")
