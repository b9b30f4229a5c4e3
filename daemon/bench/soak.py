"""Soak: steady two-way traffic through the rehearsal while the daemon's memory is watched.

The daemon runs as ``python -m daemon run --config FILE`` (its own process)
between both simulators, configured as ``socbridge sim all`` configures it
(reconciliation polls every 5 s). On 40 linked tickets (:class:`Profile`):

- a technician changes a ConnectWise ticket's priority every 50 ms,
  round-robin over the links (so each link changes every 2 s, above the
  sources' one-second resolution), and adds a Discussion note with every 7th
  change;
- the SOC analyst adds a public comment every 300 ms, round-robin over the links.

Every 5 seconds the daemon's ``RssAnon`` (from
``/proc/PID/status``) and its open file descriptors (``/proc/PID/fd``) are
sampled. ``soak_rss_mb_per_10k_changes`` is the least-squares slope of RssAnon
against the changes made, over the samples after the warm-up
(:func:`warmup_s`: 2 minutes of the default 10, a fifth of shorter runs).
After the traffic stops, ``soak_settle_s`` is how long until both desks agree:
every link has the same priority on both sides, and every note and comment
made during the run has reached the other desk. ``soak_outbox_depth_at_stop``
is how many commands were still waiting then: the daemon's writes are capped
by each desk's ``requests_per_second`` (5 by default, two requests per update),
well below this traffic, so they queue.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from daemon.bench.pipeline import Child, _until_ok, daemon_child, make_links
from daemon.simulators.harness import Analyst, Technician
from daemon.simulators.rehearsal import PRIORITY_MAPPING, Rehearsal, start_rehearsal

#: The warm-up before the slope is taken, for runs of 10 minutes or more.
WARMUP_S = 120.0
#: The reconciliation period ``socbridge sim all`` writes by default.
POLL_S = 5.0
SOC_PRIORITIES = tuple(PRIORITY_MAPPING)
CW_TO_SOC = {cw: soc for soc, cw in PRIORITY_MAPPING.items()}


@dataclass(frozen=True)
class Profile:
    """The traffic: the defaults are the soak ``socbridge bench --only soak`` runs."""

    links: int = 40
    #: A technician's priority change every this many seconds, round-robin over the links.
    change_every_s: float = 0.05
    #: A note with every this-many-th change.
    note_every: int = 7
    #: An analyst's comment every this many seconds, round-robin over the links.
    comment_every_s: float = 0.3
    #: RssAnon and open fds are sampled this often.
    sample_every_s: float = 5.0
    #: How long the desks may take to agree once the traffic stops (``soak_agreed`` is
    #: false, with the first disagreements, when they do not).
    settle_deadline_s: float = 600.0


# ------------------------------------------------------------------ measuring


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/PID/status`` (``RssAnon``, ``VmRSS``, ``VmHWM``...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(f"{key} is not in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    """How many file descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def warmup_s(duration_s: float) -> float:
    """The warm-up excluded from the slope: :data:`WARMUP_S` of a 10-minute run, and the
    same share (a fifth) of a shorter one."""
    return min(WARMUP_S, duration_s / 5)


@dataclass(frozen=True)
class Sample:
    at_s: float  # seconds since the traffic started
    changes: int
    rss_anon_kb: int
    fds: int


def mb_per_10k_changes(samples: list[Sample], after_s: float) -> float:
    """Least-squares slope of RssAnon (MB) against changes made, per 10k changes, over the
    samples taken at or after ``after_s``; 0.0 with fewer than two distinct change counts."""
    points = [(s.changes, s.rss_anon_kb / 1024) for s in samples if s.at_s >= after_s]
    if len({x for x, _ in points}) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx * 10_000


def mb_by_minute(samples: list[Sample]) -> list[float]:
    """RssAnon (MB) at each whole minute of the traffic (the first sample at or after it):
    shows whether a growth levels off."""
    out: list[float] = []
    for s in samples:
        if s.at_s >= 60 * (len(out) + 1):
            out.append(round(s.rss_anon_kb / 1024, 1))
    return out


# -------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """What the people did, to check against both desks at the end."""

    links: list[tuple[int, int]]
    profile: Profile
    priority: dict[int, str] = field(default_factory=dict)  # cw id -> its SOC priority name
    notes: dict[int, list[str]] = field(default_factory=dict)  # cw id -> note texts
    comments: dict[int, list[str]] = field(default_factory=dict)  # soc id -> comment bodies
    changes: int = 0


async def _every(period_s: float, until: float, step: Any) -> None:
    """Call ``step(n)`` at ``start + n * period_s`` until ``until`` (monotonic); a late step
    is taken at once, without sleeping, so the rate holds on average."""
    start = time.monotonic()
    n = 0
    while True:
        at = start + n * period_s
        if at >= until:
            return
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await step(n)
        n += 1


async def technician(tech: Technician, traffic: Traffic, until: float) -> None:
    async def step(n: int) -> None:
        cw_id, _ = traffic.links[n % len(traffic.links)]
        current = traffic.priority.get(cw_id, "high")
        value = SOC_PRIORITIES[(SOC_PRIORITIES.index(current) + 1) % len(SOC_PRIORITIES)]
        await tech.set(cw_id, priority=PRIORITY_MAPPING[value])
        traffic.priority[cw_id] = value
        traffic.changes += 1
        if traffic.changes % traffic.profile.note_every == 0:
            text = f"soak note {traffic.changes} on cw {cw_id}"
            await tech.note(cw_id, text)
            traffic.notes.setdefault(cw_id, []).append(text)

    await _every(traffic.profile.change_every_s, until, step)


async def analyst(soc: Analyst, traffic: Traffic, until: float) -> None:
    async def step(n: int) -> None:
        _, soc_id = traffic.links[n % len(traffic.links)]
        body = f"soak comment {n} on soc {soc_id}"
        await soc.comment(soc_id, body)
        traffic.comments.setdefault(soc_id, []).append(body)

    await _every(traffic.profile.comment_every_s, until, step)


def disagreements(rehearsal: Rehearsal, traffic: Traffic) -> list[str]:
    """What the two desks (the simulators' state) do not agree on yet; empty when they do."""
    cw, soc = rehearsal.cw.state, rehearsal.soc.state
    out: list[str] = []
    for cw_id, soc_id in traffic.links:
        ticket = cw.tickets[cw_id]
        cw_priority = (cw.ref("priority", ticket.get("_ref_priority")) or {}).get("name")
        soc_ticket = soc.tickets[soc_id]
        if CW_TO_SOC.get(str(cw_priority)) != soc_ticket.priority:
            out.append(f"priority cw:{cw_id}={cw_priority} soc:{soc_id}={soc_ticket.priority}")
        soc_text = "\n".join(c.body for c in soc_ticket.comments)
        missing = [t for t in traffic.notes.get(cw_id, []) if t not in soc_text]
        if missing:
            out.append(f"{len(missing)} notes of cw:{cw_id} not on soc:{soc_id}")
        cw_text = "\n".join(str(n.get("text")) for n in cw.notes.get(cw_id, []))
        missing = [t for t in traffic.comments.get(soc_id, []) if t not in cw_text]
        if missing:
            out.append(f"{len(missing)} comments of soc:{soc_id} not on cw:{cw_id}")
    return out


# -------------------------------------------------------------------- the run


def sample(pid: int, at_s: float, changes: int) -> Sample:
    """The process's RssAnon and open fds now."""
    return Sample(at_s, changes, proc_status_kb(pid, "RssAnon"), open_fds(pid))


async def _sampler(
    child: Child, traffic: Traffic, began: float, samples: list[Sample], stop: asyncio.Event
) -> None:
    assert child.proc is not None
    while True:
        child.check()
        samples.append(sample(child.proc.pid, time.monotonic() - began, traffic.changes))
        try:
            await asyncio.wait_for(stop.wait(), traffic.profile.sample_every_s)
            return
        except TimeoutError:
            pass


async def _outbox_depth(session: aiohttp.ClientSession, rehearsal: Rehearsal) -> int:
    """Commands waiting in the daemon's outbox (``/readyz`` says, ready or not)."""
    async with session.get(f"{rehearsal.daemon_url}/readyz") as resp:
        return int((await resp.json())["outbox_depth"])


async def run_soak(folder: Path, minutes: float, profile: Profile | None = None) -> dict[str, Any]:
    """Drive the soak traffic for ``minutes`` through the daemon process; figures in a dict."""
    profile = profile or Profile()
    duration = minutes * 60
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, folder / "soak" / "socbridge.toml", None, poll_s=POLL_S
    )
    daemon = daemon_child(rehearsal.config_path, folder / "soak-daemon.log")
    samples: list[Sample] = []
    figures: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session:
            await daemon.start()
            await _until_ok(session, f"{rehearsal.daemon_url}/readyz", daemon, 300)
            tech = Technician(session, rehearsal.cw.url)
            links = await make_links(rehearsal, tech, profile.links, session, daemon)
            traffic = Traffic(links, profile)
            stop = asyncio.Event()
            began = time.monotonic()
            sampler = asyncio.create_task(_sampler(daemon, traffic, began, samples, stop))
            until = began + duration
            await asyncio.gather(
                technician(tech, traffic, until),
                analyst(Analyst(session, rehearsal.soc.url), traffic, until),
            )
            stopped = time.monotonic()
            stop.set()
            await sampler
            assert daemon.proc is not None
            pid = daemon.proc.pid
            samples.append(sample(pid, stopped - began, traffic.changes))
            figures["soak_outbox_depth_at_stop"] = await _outbox_depth(session, rehearsal)
            left = disagreements(rehearsal, traffic)
            while left and time.monotonic() - stopped < profile.settle_deadline_s:
                daemon.check()
                await asyncio.sleep(0.1)
                left = disagreements(rehearsal, traffic)
            figures["soak_settle_s"] = round(time.monotonic() - stopped, 1)
            figures["soak_agreed"] = not left
            if left:
                figures["soak_disagreements"] = left[:5]
            figures["soak_rss_anon_mb_settled"] = round(proc_status_kb(pid, "RssAnon") / 1024, 1)
    finally:
        await daemon.stop()
        await rehearsal.stop()
    start, end = samples[0], samples[-1]
    warm = warmup_s(duration)
    figures.update(
        soak_minutes=minutes,
        soak_changes=traffic.changes,
        soak_notes=sum(len(v) for v in traffic.notes.values()),
        soak_comments=sum(len(v) for v in traffic.comments.values()),
        soak_rss_anon_mb_start=round(start.rss_anon_kb / 1024, 1),
        soak_rss_anon_mb_end=round(end.rss_anon_kb / 1024, 1),
        soak_warmup_s=round(warm, 1),
        soak_rss_mb_per_10k_changes=round(mb_per_10k_changes(samples, warm), 2),
        soak_rss_anon_mb_by_minute=mb_by_minute(samples),
        soak_fds_start=start.fds,
        soak_fds_growth=end.fds - start.fds,
        soak_fds_max_growth=max(s.fds for s in samples) - start.fds,
    )
    return figures
