"""Pipeline benchmarks: the real daemon process between the two simulators on loopback.

- ``ingest_per_s`` / ``ingest_p99_ms``: signed ConnectWise callbacks (the
  simulator's own payloads and signatures, each with a fresh ``MessageId``)
  POSTed by 32 concurrent connections to the daemon's intake; each is answered
  200 only once its event is durable in the log. ``plain_aiohttp_per_s`` is the
  named peer: a plain aiohttp handler that only parses the JSON body, in a
  process of its own, driven by the same load generator with the same bodies,
  in rounds interleaved with the daemon's (median round reported).
- ``sync_p50_ms`` / ``sync_p99_ms``: a priority change accepted by one
  simulator until the daemon's write of it lands in the other simulator, both
  times taken by listeners inside the simulators (one clock, this process).
  Both directions (``sync_cw_to_soc_*``, ``sync_soc_to_cw_*``), one change at a
  time, on linked tickets.
- ``host_sleep_10ms_p99_ms``: the peer for the sync tail, the host itself. A
  separate, otherwise idle process sleeps 10 ms at a time for
  :data:`HOST_PROBE_S` just before the sync samples are taken, and reports how
  late it woke (p50, p99, share of wake-ups more than 100 ms late). Every hop
  of a sync (simulator, daemon, simulator) wakes a process that was waiting.
- ``ready_s``: ``socbridge run`` started as a process on a large log until its
  ``/readyz`` answers 200 (median of a few restarts).

The daemon runs as ``python -m daemon run --config FILE`` (its own process, its
own core share), configured exactly as ``socbridge sim all`` configures it.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.connectwise.callbacks import sign
from daemon.simulators.harness import Analyst, Technician
from daemon.simulators.rehearsal import (
    PRIORITY_MAPPING,
    Rehearsal,
    _free_port,
    start_rehearsal,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
CONCURRENCY = 32
#: Seconds between one change landing and the next change being made.
GAP_S = 0.5
#: Seconds the host probe sleeps in 10 ms steps.
HOST_PROBE_S = 10.0
_HOST_PROBE = """
import json, sys, time
late, end = [], time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t = time.perf_counter()
    time.sleep(0.01)
    late.append(time.perf_counter() - t - 0.01)
print(json.dumps(late))
"""
#: Seconds the bridge idles (rate-cap budgets refill) before the first change.
IDLE_S = 2.0
SOC_PRIORITIES = tuple(PRIORITY_MAPPING)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- processes


def child_env(folder: Path) -> dict[str, str]:
    """The environment for the processes measured: bytecode cached in ``folder``.

    A deployed socbridge has its modules compiled (pip writes the ``.pyc`` files
    at install). With ``PYTHONDONTWRITEBYTECODE`` set (as on some development
    machines) every start would compile socbridge's source again, which no
    installed daemon does; so the children may write their bytecode, but only
    under ``folder`` (the benchmark's temp folder), never into the checkout.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the benchmark process dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Child:
    """A server process (the daemon or the peer) with its output in a log file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        # Every child of one run shares the bytecode cache beside the logs.
        self.env = child_env(log.parent)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=REPO,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,
            )

    def check(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.argv[2:4]} exited with {self.proc.returncode}:\n{tail}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _until_ok(
    session: aiohttp.ClientSession, url: str, child: Child, deadline_s: float = 60.0
) -> Any:
    """Poll ``url`` every 10 ms until it answers 200; return its JSON body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        child.check()
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return await resp.json()
        except aiohttp.ClientError:
            pass
        if loop.time() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {deadline_s} s")
        await asyncio.sleep(0.01)


def daemon_child(config: Path, log: Path) -> Child:
    return Child([sys.executable, "-m", "daemon", "run", "--config", str(config)], log)


# --------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    per_s: float
    p99_ms: float
    failures: int


async def drive(url: str, requests: list[tuple[bytes, dict[str, str]]]) -> LoadResult:
    """POST every request over ``CONCURRENCY`` keep-alive connections; rate and p99 latency."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    latencies: list[float] = []
    failures = 0
    todo = iter(requests)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            for body, headers in todo:
                sent = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - sent)

        # Warm the connections up before the clock starts.
        async with session.get(url.rsplit("/", 2)[0] + "/healthz") as resp:
            await resp.read()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    return LoadResult(len(latencies) / elapsed, percentile(latencies, 0.99) * 1000, failures)


def signed_callbacks(rehearsal: Rehearsal, ticket_ids: list[int], count: int) -> list[Any]:
    """``count`` callbacks as the ConnectWise simulator sends them, each a new delivery."""
    cw = rehearsal.cw
    entities = [
        orjson.dumps(cw.state.render_ticket(cw.state.tickets[t])).decode() for t in ticket_ids
    ]
    key_url = cw.callbacks.key_url
    out = []
    for i in range(count):
        k = i % len(ticket_ids)
        payload = {
            "Action": "updated", "CallbackObjectRecId": 26551, "CompanyId": cwfx.LOGIN_COMPANY,
            "Entity": entities[k], "FromUrl": cw.url.split("://", 1)[-1], "ID": ticket_ids[k],
            "MemberId": cwfx.TECH_MEMBER, "MessageId": str(uuid.uuid4()),
            "Metadata": {"key_url": key_url}, "PartnerId": "61ddc2817bcddc0001c74208",
            "ProductInstanceId": "639c96cab2eb560001dd1324", "Type": "ticket",
        }  # fmt: skip
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "x-content-signature": sign(cw.state.signing_key, body),
        }
        out.append((body, headers))
    return out


# ------------------------------------------------------------------ sync latency


@dataclass
class Watch:
    """Listeners in both simulators: when a change was accepted, when its copy landed."""

    rehearsal: Rehearsal
    waiting: dict[tuple[str, int, str], asyncio.Future[float]] = field(default_factory=dict)
    accepted: dict[tuple[str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rehearsal.cw.state.listeners.append(self._on_cw)
        self.rehearsal.soc.state.listeners.append(self._on_soc)

    def _land(self, side: str, ticket_id: int, value: str | None, writer_is_bridge: bool) -> None:
        now = time.perf_counter()
        if not writer_is_bridge:
            self.accepted[(side, ticket_id)] = now
            return
        future = self.waiting.pop((side, ticket_id, str(value)), None)
        if future is not None and not future.done():
            future.set_result(now)

    def _on_cw(self, action: str, ticket_id: int, entity: Any, writer: str, skip: bool) -> None:
        value = ((entity or {}).get("priority") or {}).get("name")
        self._land("cw", ticket_id, value, writer == cwfx.API_MEMBER)

    def _on_soc(self, change: Any) -> None:
        ticket = self.rehearsal.soc.state.tickets.get(change.ticket_id)
        if ticket is None:
            return
        actor = self.rehearsal.soc.state.users.get(change.actor_id)
        bridge = getattr(actor, "email", None) == "socbridge@soc.example"
        self._land("soc", change.ticket_id, ticket.priority, bridge)

    def expect(self, side: str, ticket_id: int, value: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[(side, ticket_id, value)] = future
        return future


async def _settled(session: aiohttp.ClientSession, daemon_url: str, child: Child) -> None:
    """Wait until the daemon's outbox is empty and its position stays put for 0.3 s."""
    last, still_since = -1, time.perf_counter()
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        body = await _until_ok(session, f"{daemon_url}/readyz", child)
        now = time.perf_counter()
        if body["position"] != last or body["outbox_depth"]:
            last, still_since = body["position"], now
        elif now - still_since >= 0.3:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the daemon did not settle within 60 s")


async def _decided_again(session: aiohttp.ClientSession, daemon_url: str) -> dict[str, int]:
    """From the daemon's /metrics: inputs decided again because the log moved on before
    their decisions were appended (sync and ingest together), and events appended."""
    async with session.get(f"{daemon_url}/metrics") as resp:
        text = await resp.text()
    again = re.search(r"^socbridge_sync_decided_again_total (\S+)$", text, re.M)
    appended = re.findall(r"^socbridge_events_appended_total\{[^}]*\} (\S+)$", text, re.M)
    return {
        "sync_decided_again": int(float(again.group(1))) if again else -1,
        "events_appended": int(sum(float(n) for n in appended)),
    }


async def make_links(
    rehearsal: Rehearsal, tech: Technician, count: int, session: aiohttp.ClientSession, child: Child
) -> list[tuple[int, int]]:
    """``count`` ConnectWise tickets routed to the SOC; (cw id, soc id) once linked."""
    created = await asyncio.gather(
        *(tech.create_ticket(f"Benchmark incident {i}", priority=PRIORITY_MAPPING["high"])
          for i in range(count))
    )  # fmt: skip
    cw_ids = [int(t["id"]) for t in created]
    deadline = time.perf_counter() + 60
    pairs: dict[int, int] = {}
    while len(pairs) < count:
        for ticket in rehearsal.soc.state.tickets.values():
            ext = ticket.external_id or ""
            if ext.startswith("socbridge:cw:") and int(ext.rsplit(":", 1)[1]) in cw_ids:
                pairs[int(ext.rsplit(":", 1)[1])] = ticket.id
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {len(pairs)} of {count} tickets were linked within 60 s")
        await asyncio.sleep(0.05)
    await _settled(session, rehearsal.daemon_url, child)
    return [(c, pairs[c]) for c in cw_ids]


async def sync_latency(
    rehearsal: Rehearsal, links: list[tuple[int, int]], samples: int, child: Child,
    session: aiohttp.ClientSession,
) -> dict[str, list[float]]:  # fmt: skip
    """One change at a time, alternating directions on separate links; latencies in ms."""
    watch = Watch(rehearsal)
    # Start on an idle bridge: the links' creation spent both APIs' rate-capped budget.
    await asyncio.sleep(IDLE_S)
    tech = Technician(session, rehearsal.cw.url)
    analyst = Analyst(session, rehearsal.soc.url)
    half = len(links) // 2
    by_dir = {"cw_to_soc": links[:half], "soc_to_cw": links[half:]}
    current = {pair: "high" for pair in links}
    touched: dict[tuple[int, int], float] = {}
    last_landed = 0.0
    out: dict[str, list[float]] = {"cw_to_soc": [], "soc_to_cw": [], "timeouts": []}
    for i in range(samples * 2):
        direction = "cw_to_soc" if i % 2 == 0 else "soc_to_cw"
        pool = by_dir[direction]
        pair = pool[(i // 2) % len(pool)]
        # Source times have one-second resolution: one change per link per second;
        # and changes come one at a time, GAP_S apart (a busy desk, not a flood:
        # each side's API is rate-capped and that cap is not what is measured here).
        wait = max(touched.get(pair, 0) + 1.05, last_landed + GAP_S) - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        value = SOC_PRIORITIES[(SOC_PRIORITIES.index(current[pair]) + 1) % len(SOC_PRIORITIES)]
        current[pair] = value
        cw_id, soc_id = pair
        if direction == "cw_to_soc":
            landed = watch.expect("soc", soc_id, value)
            await tech.set(cw_id, priority=PRIORITY_MAPPING[value])
            origin = ("cw", cw_id)
        else:
            landed = watch.expect("cw", cw_id, PRIORITY_MAPPING[value])
            await analyst.set(soc_id, priority=value)
            origin = ("soc", soc_id)
        touched[pair] = time.perf_counter()
        try:
            end = await asyncio.wait_for(landed, 10)
        except TimeoutError:
            child.check()
            out["timeouts"].append(1.0)
            continue
        last_landed = end
        out[direction].append((end - watch.accepted[origin]) * 1000)
    return out


async def host_wakeups(seconds: float = HOST_PROBE_S) -> dict[str, float]:
    """How late an idle process on this host wakes from a 10 ms sleep (see the module doc)."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOST_PROBE, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await probe.communicate()
    late = [x * 1000 for x in orjson.loads(out)]
    return {
        "host_sleep_10ms_p50_ms": round(percentile(late, 0.5), 2),
        "host_sleep_10ms_p99_ms": round(percentile(late, 0.99), 1),
        "host_sleep_10ms_late_100ms_pct": round(100 * sum(x > 100 for x in late) / len(late), 2),
    }


# -------------------------------------------------------------------- the run


@dataclass
class Sizes:
    links: int  # per direction
    samples: int  # sync changes per direction
    ingest_requests: int  # per round and contender
    rounds: int


async def run_pipeline(folder: Path, sizes: Sizes) -> dict[str, Any]:
    """Sync latency and ingest against the daemon process; figures in a dict."""
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, folder / "socbridge.toml", None, poll_s=30.0, export_lag=60.0
    )
    daemon = daemon_child(rehearsal.config_path, folder / "daemon.log")
    peer_port = _free_port("127.0.0.1")
    peer = Child([sys.executable, "-m", "daemon.bench.plain_server", str(peer_port)],
                 folder / "peer.log")  # fmt: skip
    figures: dict[str, Any] = {}
    cpu = {"ours": 0.0, "plain": 0.0}
    try:
        async with aiohttp.ClientSession() as session:
            await daemon.start()
            await peer.start()
            # Not a measured figure (ready_s is): the first start compiles socbridge into the
            # run's empty bytecode cache, which can take minutes on a loaded host.
            await _until_ok(session, f"{rehearsal.daemon_url}/readyz", daemon, 300)
            tech = Technician(session, rehearsal.cw.url)
            links = await make_links(rehearsal, tech, sizes.links * 2, session, daemon)
            figures.update(await host_wakeups(2.0 if sizes.samples < 10 else HOST_PROBE_S))
            lat = await sync_latency(rehearsal, links, sizes.samples, daemon, session)
            both = lat["cw_to_soc"] + lat["soc_to_cw"]
            figures["sync_p50_ms"] = round(percentile(both, 0.5), 1)
            figures["sync_p99_ms"] = round(percentile(both, 0.99), 1)
            for direction in ("cw_to_soc", "soc_to_cw"):
                figures[f"sync_{direction}_p50_ms"] = round(percentile(lat[direction], 0.5), 1)
                figures[f"sync_{direction}_p99_ms"] = round(percentile(lat[direction], 0.99), 1)
            figures["sync_samples"] = len(both)
            figures["sync_timeouts"] = len(lat["timeouts"])

            await _settled(session, rehearsal.daemon_url, daemon)
            cw_ids = [c for c, _ in links]
            ours: list[LoadResult] = []
            plain: list[LoadResult] = []
            for _ in range(sizes.rounds):
                bodies = signed_callbacks(rehearsal, cw_ids, sizes.ingest_requests)
                before = daemon.cpu_s()
                ours.append(await drive(rehearsal.daemon_url + "/callbacks/connectwise", bodies))
                # Until the daemon is idle again: what each callback costs it, sync included.
                await _settled(session, rehearsal.daemon_url, daemon)
                cpu["ours"] += daemon.cpu_s() - before
                peer.check()
                before = peer.cpu_s()
                plain.append(
                    await drive(f"http://127.0.0.1:{peer_port}/callbacks/connectwise", bodies)
                )
                cpu["plain"] += peer.cpu_s() - before
            figures.update(await _decided_again(session, rehearsal.daemon_url))
    finally:
        await daemon.stop()
        await peer.stop()
        await rehearsal.stop()

    def median(results: list[LoadResult], pick: Callable[[LoadResult], float]) -> float:
        return round(statistics.median(pick(r) for r in results), 1)

    failures = sum(r.failures for r in ours + plain)
    if failures:
        tail = (folder / "daemon.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{failures} ingest requests were not answered 200:\n{tail}")
    figures["ingest_per_s"] = median(ours, lambda r: r.per_s)
    figures["ingest_p99_ms"] = median(ours, lambda r: r.p99_ms)
    figures["plain_aiohttp_per_s"] = median(plain, lambda r: r.per_s)
    figures["plain_aiohttp_p99_ms"] = median(plain, lambda r: r.p99_ms)
    figures["ingest_vs_plain"] = round(figures["ingest_per_s"] / figures["plain_aiohttp_per_s"], 3)
    figures["ingest_requests"] = sizes.ingest_requests * sizes.rounds
    # CPU per request is steadier than a rate on a shared machine: it says what each
    # request costs, whatever share of the cores the process was given meanwhile.
    per_request = {k: round(v * 1000 / figures["ingest_requests"], 3) for k, v in cpu.items()}
    figures["ingest_cpu_ms_per_request"] = per_request["ours"]
    figures["plain_aiohttp_cpu_ms_per_request"] = per_request["plain"]
    return figures


async def _import_probe(folder: Path) -> float:
    """Seconds for a fresh interpreter to import what ``socbridge run`` needs."""
    started = time.perf_counter()
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import daemon.cli.main; daemon.cli.main.build_parser('run'); import daemon.service.app",
        cwd=REPO, env=child_env(folder),
    )  # fmt: skip
    await probe.wait()
    return time.perf_counter() - started


async def ready_after_restart(folder: Path, db: Path, restarts: int) -> dict[str, Any]:
    """Start ``socbridge run`` on the log at ``db``: spawn to /readyz 200, ``restarts`` times."""
    config = folder / "ready" / "socbridge.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    cw_sim_rehearsal = await start_rehearsal(
        "127.0.0.1", 0, folder / "ready-sims" / "socbridge.toml", None, poll_s=30.0
    )
    port = _free_port("127.0.0.1")
    try:
        write_config(config, cw_sim_rehearsal.cw.url, cw_sim_rehearsal.soc.url, "127.0.0.1",
                     port, 30.0)  # fmt: skip
        text = config.read_text().replace(str(config.parent / "events.db"), str(db))
        config.write_text(text)
        times: list[float] = []
        position = 0
        # Untimed, once: compile the modules into the bytecode cache (child_env), as
        # pip does at install. Otherwise the first restart alone compiles socbridge
        # and every dependency, which no installed daemon does at a restart.
        await _import_probe(folder)
        async with aiohttp.ClientSession() as session:
            for _ in range(restarts):
                child = daemon_child(config, folder / "ready.log")
                start = time.perf_counter()
                await child.start()
                try:
                    body = await _until_ok(session, f"http://127.0.0.1:{port}/readyz", child, 300)
                    times.append(time.perf_counter() - start)
                    position = body["position"]
                finally:
                    await child.stop()
    finally:
        await cw_sim_rehearsal.stop()
    # What the interpreter and the imports of ``socbridge run`` alone cost (its own
    # module and what the daemon needs): the part of ready_s before the daemon starts.
    imports = await _import_probe(folder)
    return {
        "ready_imports_s": round(imports, 3),
        "ready_s": round(statistics.median(times), 3),
        "ready_max_s": round(max(times), 3),
        "ready_restarts": restarts,
        "ready_position": position,
    }
