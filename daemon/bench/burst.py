"""Burst: many changes to a few tickets at once, and what converging costs in time and API calls.

(Also the idle part, :func:`run_idle`: what reconciliation costs when nothing changes.)

The daemon runs as ``python -m daemon run --config FILE`` (its own process)
between both simulators, configured as ``socbridge sim all`` configures it
(their default rate caps). On 16 linked tickets a technician changes each
ticket's priority 100 times in a row, the 16 tickets in parallel, as fast as
the ConnectWise simulator takes the changes; each fires its signed callback.

Reported, in the ``--json`` line:

- ``burst_changes``: changes made;
- ``burst_converge_s``: from the last change until both desks show every
  ticket's final priority and the daemon's outbox is empty;
- ``burst_soc_writes``: ticket writes (``PUT``) the daemon sent the SOC for
  them; ``burst_soc_requests`` all its SOC requests meanwhile;
- ``burst_cw_reads``: re-reads of ConnectWise tickets sync asked for
  (``purpose="fetch"``); ``burst_cw_requests`` all its ConnectWise requests;
- ``burst_decisions_per_commit``: inputs whose decisions went into one append.

The counts come from the daemon's own ``/metrics``
(``socbridge_remote_requests_total``, ``socbridge_sync_*``), taken before the
burst and after it converged.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from daemon.bench.pipeline import _until_ok, daemon_child, make_links
from daemon.simulators.harness import Technician
from daemon.simulators.rehearsal import PRIORITY_MAPPING, Rehearsal, start_rehearsal

CW_PRIORITIES = tuple(PRIORITY_MAPPING.values())
CW_TO_SOC = {cw: soc for soc, cw in PRIORITY_MAPPING.items()}
_SAMPLE = re.compile(r"^(socbridge_[a-z_]+)(\{[^}]*\})? (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Shape:
    """The burst: the defaults are the one ``socbridge bench --only burst`` runs."""

    links: int = 16
    changes_per_link: int = 100
    #: How long the desks get to agree after the last change.
    converge_deadline_s: float = 600.0


def final_priority(shape: Shape) -> str:
    """The priority each ticket ends on (the changes cycle through the four)."""
    return CW_PRIORITIES[(shape.changes_per_link - 1) % len(CW_PRIORITIES)]


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], float]:
    """The daemon's ``/metrics`` samples: (name, labels) -> value."""
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {(m[1], m[2] or ""): float(m[3]) for m in _SAMPLE.finditer(text)}


def requests(metrics: dict[tuple[str, str], float], side: str, **match: str) -> float:
    """Sum of ``socbridge_remote_requests_total`` on ``side`` whose labels match."""
    wanted = [f'side="{side}"', *(f'{k}="{v}"' for k, v in match.items())]
    return sum(
        v
        for (name, labels), v in metrics.items()
        if name == "socbridge_remote_requests_total" and all(w in labels for w in wanted)
    )


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
          side: str, **match: str) -> int:  # fmt: skip
    return round(requests(after, side, **match) - requests(before, side, **match))


def converged(rehearsal: Rehearsal, links: list[tuple[int, int]], final: str) -> bool:
    """Both desks (the simulators' state) show ``final`` on every ticket."""
    cw, soc = rehearsal.cw.state, rehearsal.soc.state
    for cw_id, soc_id in links:
        ticket = cw.tickets[cw_id]
        name = (cw.ref("priority", ticket.get("_ref_priority")) or {}).get("name")
        if name != final or soc.tickets[soc_id].priority != CW_TO_SOC[final]:
            return False
    return True


async def _outbox_empty(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(f"{url}/readyz") as resp:
        return int((await resp.json())["outbox_depth"]) == 0


async def _changes(tech: Technician, cw_id: int, shape: Shape) -> None:
    for n in range(shape.changes_per_link):
        await tech.set(cw_id, priority=CW_PRIORITIES[n % len(CW_PRIORITIES)])


async def run_burst(folder: Path, shape: Shape | None = None) -> dict[str, Any]:
    """Drive the burst through the daemon process; figures in a dict."""
    shape = shape or Shape()
    rehearsal = await start_rehearsal("127.0.0.1", 0, folder / "burst" / "socbridge.toml", None)
    daemon = daemon_child(rehearsal.config_path, folder / "burst-daemon.log")
    final = final_priority(shape)
    try:
        async with aiohttp.ClientSession() as session:
            await daemon.start()
            url = rehearsal.daemon_url
            await _until_ok(session, f"{url}/readyz", daemon, 300)
            tech = Technician(session, rehearsal.cw.url)
            links = await make_links(rehearsal, tech, shape.links, session, daemon)
            before = await scrape(session, url)
            began = time.monotonic()
            await asyncio.gather(*(_changes(tech, cw_id, shape) for cw_id, _ in links))
            last_change = time.monotonic()
            while not (converged(rehearsal, links, final) and await _outbox_empty(session, url)):
                daemon.check()
                if time.monotonic() - last_change > shape.converge_deadline_s:
                    break
                await asyncio.sleep(0.05)
            converge_s = time.monotonic() - last_change
            agreed = converged(rehearsal, links, final)
            after = await scrape(session, url)
    finally:
        await daemon.stop()
        await rehearsal.stop()
    commits = after.get(("socbridge_sync_commits_total", ""), 0) - before.get(
        ("socbridge_sync_commits_total", ""), 0
    )
    inputs = after.get(("socbridge_sync_inputs_decided_total", ""), 0) - before.get(
        ("socbridge_sync_inputs_decided_total", ""), 0
    )
    return {
        "burst_links": shape.links,
        "burst_changes": shape.links * shape.changes_per_link,
        "burst_changes_s": round(last_change - began, 1),
        "burst_agreed": agreed,
        "burst_converge_s": round(converge_s, 1),
        "burst_soc_writes": delta(before, after, "soc", purpose="write", method="PUT"),
        "burst_soc_requests": delta(before, after, "soc"),
        "burst_cw_reads": delta(before, after, "cw", purpose="fetch"),
        "burst_cw_requests": delta(before, after, "cw"),
        "burst_decisions_per_commit": round(inputs / commits, 2) if commits else 0.0,
    }


# -------------------------------------------------------------------- idle polling cost

#: Default reconciliation periods (``[connectwise]``/``[soc] poll_interval_seconds``).
DEFAULT_POLL_S = {"cw": 300.0, "soc": 60.0}


def _passes(log: Path) -> dict[str, int]:
    """Completed reconciliation passes per desk, from the daemon's JSON log lines."""
    passes = {"cw": 0, "soc": 0}
    for line in log.read_text(errors="replace").splitlines():
        if '"poll.done"' in line:
            desk = orjson.loads(line).get("desk")
            if desk in passes:
                passes[desk] += 1
    return passes


async def run_idle(folder: Path, links: int = 4, window_s: float = 30.0) -> dict[str, Any]:
    """Requests per reconciliation pass with nothing changing, and what that costs per hour
    at the default poll periods. Polls run every 2 s here so that a window holds many."""
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, folder / "idle" / "socbridge.toml", None, poll_s=2.0
    )
    log = folder / "idle-daemon.log"
    daemon = daemon_child(rehearsal.config_path, log)
    try:
        async with aiohttp.ClientSession() as session:
            await daemon.start()
            url = rehearsal.daemon_url
            await _until_ok(session, f"{url}/readyz", daemon, 300)
            await make_links(rehearsal, Technician(session, rehearsal.cw.url), links, session,
                             daemon)  # fmt: skip
            await asyncio.sleep(4.0)  # the links' own reads and writes are over
            before, passes_before = await scrape(session, url), _passes(log)
            await asyncio.sleep(window_s)
            daemon.check()
            after, passes_after = await scrape(session, url), _passes(log)
    finally:
        await daemon.stop()
        await rehearsal.stop()
    figures: dict[str, Any] = {"idle_links": links, "idle_window_s": window_s}
    per_hour = 0.0
    for side in ("cw", "soc"):
        passes = passes_after[side] - passes_before[side]
        sent = delta(before, after, side)
        per_pass = sent / passes if passes else float(sent)
        figures[f"idle_{side}_passes"] = passes
        figures[f"idle_{side}_requests"] = sent
        figures[f"idle_{side}_requests_per_pass"] = round(per_pass, 2)
        per_hour += per_pass * 3600 / DEFAULT_POLL_S[side]
    figures["idle_requests_per_hour_default"] = round(per_hour, 1)
    return figures
