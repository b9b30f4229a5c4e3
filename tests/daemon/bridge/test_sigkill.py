"""SIGKILL the real daemon process at random moments under two-way load, restart it, and
check that nothing was lost or doubled on either desk (issue 5).

The simulators run in this process; the daemon is ``python -m daemon run`` on the config
``socbridge sim all`` writes for them. While a technician routes tickets and writes notes in
ConnectWise and an analyst opens incidents and replies on the SOC desk, the daemon is killed
several times (between any two appends, mid-delivery, mid-poll) and started again. When it
has settled, every ticket and every note must exist exactly once on both sides, linked
one-to-one, every status and priority must agree and hold the last change made to it (two
changes to one field land within the same second), and the event log must still verify.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daemon.simulators.harness import Analyst, Technician
from daemon.simulators.rehearsal import PRIORITY_MAPPING, Rehearsal, start_rehearsal
from eventstore import EventStore, verify
from projections.fold import apply
from projections.state import BridgeState
from tests.support.agreement import Picture, picture
from tests.support.process import DaemonProcess, eventually

SEED = int(os.environ.get("SOCBRIDGE_KILL_SEED", random.randrange(1_000_000)))
ROUNDS = 8
KILLS = 4


@pytest.fixture
async def rehearsal(tmp_path: Path) -> AsyncIterator[Rehearsal]:
    r = await start_rehearsal(
        "127.0.0.1", 0, tmp_path / "socbridge.toml", None, poll_s=0.5, export_lag=0.1
    )
    # A faster request budget than the production default (5/s), so the load drains quickly.
    text = r.config_path.read_text()
    for table in ("[connectwise]\n", "[soc]\n"):
        text = text.replace(table, f"{table}requests_per_second = 100.0\n", 1)
    r.config_path.write_text(text)
    try:
        yield r
    finally:
        await r.stop()


class Load:
    """Two-way work on both desks; remembers every text it wrote and the last status and
    priority it gave each ticket."""

    def __init__(self, tech: Technician, analyst: Analyst, rng: random.Random) -> None:
        self.tech, self.analyst, self.rng = tech, analyst, rng
        self.cw_ids: list[int] = []
        self.soc_ids: list[int] = []
        self.texts: list[str] = []
        #: ticket id -> field -> the last value set (CW names / SOC values)
        self.cw_fields: dict[int, dict[str, str]] = {}
        self.soc_fields: dict[int, dict[str, str]] = {}

    async def fields(self, i: int) -> None:
        """Status and priority changes: each side changes only the tickets it opened (so
        no conflict decides the outcome), a field twice in a row (within one second),
        statuses only once the ticket is linked (a ticket first seen solved is never
        brought over)."""
        rng = self.rng
        cw_id = rng.choice(self.cw_ids)
        for priority in rng.sample(list(PRIORITY_MAPPING.values()), 2):
            await self.tech.set(cw_id, priority=priority)
            self.cw_fields.setdefault(cw_id, {})["priority"] = priority
        soc_id = rng.choice(self.soc_ids)
        for priority in rng.sample(list(PRIORITY_MAPPING), 2):
            await self.analyst.set(soc_id, priority=priority)
            self.soc_fields.setdefault(soc_id, {})["priority"] = priority
        soc_twins = {
            int(str(t["external_id"]).rsplit(":", 1)[1])
            for t in await self.analyst.tickets()
            if str(t.get("external_id") or "").startswith("socbridge:cw:")
        }
        linked = [t for t in self.cw_ids if t in soc_twins]
        if linked:
            cw_id = rng.choice(linked)
            solved = self.cw_fields.get(cw_id, {}).get("status") == "Solved"
            status = "In Progress" if solved else "Solved"
            if i % 2:  # and at once back again, in the same second
                await self.tech.set(cw_id, status=status)
                status = "Solved" if solved else "In Progress"
            await self.tech.set(cw_id, status=status)
            self.cw_fields.setdefault(cw_id, {})["status"] = status
        cw_twins = {
            int(str(t["externalXRef"]).rsplit(":", 1)[1])
            for t in await self.tech.tickets("board/name = 'SOC Incidents'")
            if str(t.get("externalXRef") or "").startswith("socbridge:soc:")
        }
        linked = [t for t in self.soc_ids if t in cw_twins]
        if linked:
            soc_id = rng.choice(linked)
            solved = self.soc_fields.get(soc_id, {}).get("status") == "solved"
            status = "open" if solved else "solved"
            if i % 2:
                await self.analyst.set(soc_id, status=status)
                status = "solved" if solved else "open"
            await self.analyst.set(soc_id, status=status)
            self.soc_fields.setdefault(soc_id, {})["status"] = status

    def last_changes_held(self, pic: Picture) -> list[str]:
        """Every ticket holds the last status and priority the load gave it."""
        problems = []
        for cw_id, fields in self.cw_fields.items():
            pair = next((p for p in pic.pairs if p.cw["id"] == cw_id), None)
            for name, value in fields.items():
                held = pair.cw[name]["name"] if pair else None
                if held != value:
                    problems.append(f"CW {cw_id} {name} is {held}, not the last set {value}")
        for soc_id, fields in self.soc_fields.items():
            pair = next((p for p in pic.pairs if p.soc["id"] == soc_id), None)
            for name, value in fields.items():
                held = pair.soc[name] if pair else None
                if held != value:
                    problems.append(f"SOC {soc_id} {name} is {held}, not the last set {value}")
        return problems

    async def round(self, i: int) -> None:
        rng = self.rng
        cw = await self.tech.create_ticket(
            f"kill-test routed {i}", priority=rng.choice(list(PRIORITY_MAPPING.values()))
        )
        self.cw_ids.append(cw["id"])
        desc = f"kill-test description {i}"
        soc = await self.analyst.create_ticket(
            f"kill-test incident {i}", desc, priority=rng.choice(list(PRIORITY_MAPPING))
        )
        self.soc_ids.append(soc["id"])
        self.texts.append(desc)
        # Notes and replies on the originals (these need no twin to exist yet) ...
        text = f"kill-test note {i}"
        await self.tech.note(rng.choice(self.cw_ids), text)
        self.texts.append(text)
        text = f"kill-test reply {i}"
        await self.analyst.comment(rng.choice(self.soc_ids), text)
        self.texts.append(text)
        # ... and on the twins socbridge made, where they exist already.
        twins = [
            t["id"]
            for t in await self.analyst.tickets()
            if str(t.get("external_id") or "").startswith("socbridge:cw:")
        ]
        if twins:
            text = f"kill-test twin reply {i}"
            await self.analyst.comment(rng.choice(twins), text)
            self.texts.append(text)


def _all_texts_once(pic: Picture, texts: list[str]) -> list[str]:
    problems = []
    for text in texts:
        # Exact match on the text's own line: "note 1" must not count "note 10".
        on_cw = sum(text in (n.get("text") or "").splitlines() for p in pic.pairs for n in p.notes)
        on_soc = sum(
            text in (c.get("body") or "").splitlines() for p in pic.pairs for c in p.comments
        )
        if (on_cw, on_soc) != (1, 1):
            problems.append(f"{text!r}: {on_cw}x in ConnectWise, {on_soc}x on the SOC")
    return problems


async def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    print(f"SOCBRIDGE_KILL_SEED={SEED}")
    daemon = DaemonProcess(rehearsal.config_path, rehearsal.daemon_url, tmp_path / "daemon.log")
    async with aiohttp.ClientSession() as session:
        tech = Technician(session, rehearsal.cw.url)
        analyst = Analyst(session, rehearsal.soc.url)
        load = Load(tech, analyst, rng)
        await daemon.start()
        await daemon.ready(session)
        try:

            async def work() -> None:
                for i in range(ROUNDS):
                    await load.round(i)
                    await load.fields(i)

            async def killer() -> None:
                for _ in range(KILLS):
                    # A random moment: the kill lands wherever the daemon happens to be.
                    await asyncio.sleep(rng.uniform(0.2, 1.0))
                    await daemon.kill()
                    await daemon.start()
                    await daemon.ready(session)

            await asyncio.gather(work(), killer())

            async def settled() -> Picture | None:
                status = await daemon.status(session)
                if not status["ready"] or status["outbox_depth"]:
                    return None
                pic = await picture(tech, analyst)
                if pic.problems or len(pic.pairs) != 2 * ROUNDS:
                    return None
                if _all_texts_once(pic, load.texts) or load.last_changes_held(pic):
                    return None
                return pic

            try:
                pic = await eventually(settled, "both desks to agree after the kills", 40)
            except TimeoutError:
                pic = await picture(tech, analyst)
                problems = pic.problems + _all_texts_once(pic, load.texts)
                problems += load.last_changes_held(pic)
                raise AssertionError(f"seed {SEED}: {len(pic.pairs)} pairs, {problems}") from None
        finally:
            exit_code = await daemon.stop()
    assert exit_code == 0
    assert daemon.kills == KILLS
    # Both desks: every ticket once with one twin, every note and reply once on each side,
    # statuses and priorities agreeing (pic.problems) and holding the last change.
    assert pic.problems == []
    assert _all_texts_once(pic, load.texts) == []
    assert load.last_changes_held(pic) == []
    assert load.cw_fields and load.soc_fields
    assert {p.cw["id"] for p in pic.pairs} >= set(load.cw_ids)
    assert {p.soc["id"] for p in pic.pairs} >= set(load.soc_ids)
    # The log survived the kills intact, and its links are exactly the pairs on the desks.
    store = await EventStore.open(tmp_path / "events.db")
    try:
        assert (await verify(store)).ok
        state = BridgeState()
        async for event in store.read():
            apply(state, event)
    finally:
        await store.close()
    links = {(li.cw_id, li.soc_id) for li in state.links.values()}
    assert all(li.state == "linked" for li in state.links.values())
    assert links == {(p.cw["id"], p.soc["id"]) for p in pic.pairs}
    assert state.outbox == {}
