"""``socbridge bench``: print benchmark figures, each next to a peer measured in the same run.

Three groups of figures share the one JSON line:

- the event log (``daemon.bench.store``): appends and replay against raw
  sqlite3 and the ``eventsourcing`` library;
- the pipeline (``daemon.bench.pipeline``): the real daemon process between
  both simulators on loopback: signed callback ingest against a plain aiohttp
  handler, and sync latency from one simulator to the other;
- history (``daemon.bench.history`` and ``daemon.bench.replay_rss``): a
  realistic log of 100k and then 1M events written through the store,
  ``socbridge replay`` of each in a child process (wall time, peak RSS), and
  the daemon restarted on the 1M log until ``/readyz`` answers 200;
- the soak (``daemon.bench.soak``, only with ``--only soak``): steady two-way
  traffic through the daemon process for ``--minutes`` while its anonymous RSS
  and open file descriptors are sampled;
- the burst (``daemon.bench.burst``, only with ``--only burst``): 16 tickets
  changed 100 times each, as fast as the simulator takes it, and what it costs
  to converge: seconds, SOC writes, ConnectWise re-reads.

Everything lives in one temp folder, removed at the end. The machine's load
average is printed at the start and the end: shared machines are noisy, so
compare each figure with its peer from the same run.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.bench import burst, history, pipeline, soak
from daemon.bench import console as console_bench
from daemon.bench import store as store_bench
from daemon.cli.main import EXIT_OK
from daemon.cli.progress import Bars, wanted

#: The parts a run without ``--only`` measures.
PARTS = ("store", "pipeline", "history")
#: Every part ``--only`` accepts. The soak (10 minutes by default), the burst, idle and
#: console parts run only when asked.
ALL_PARTS = (*PARTS, "soak", "burst", "idle", "console")
#: The project's performance targets: printed next to the figures, never used to change them.
TARGETS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "append_concurrent_eps / sqlite_limit_batched_eps >= 0.75": (
        "store",
        lambda f: f["concurrent_vs_sqlite_limit"] >= 0.75,
    ),
    "ingest_vs_plain >= 0.5": ("pipeline", lambda f: f["ingest_vs_plain"] >= 0.5),
    "ingest_cpu_ms_per_request <= 3 x plain aiohttp's": (
        "pipeline",
        lambda f: f["ingest_cpu_ms_per_request"] <= 3 * f["plain_aiohttp_cpu_ms_per_request"],
    ),
    "sync_p99_ms < 50": ("pipeline", lambda f: f["sync_p99_ms"] < 50),
    "rss_mb < 150": ("history", lambda f: f["rss_mb"] < 150),
    "rss flat (1M <= 1.2 x 100k)": ("history", lambda f: f["rss_mb"] <= 1.2 * f["rss_100k_mb"]),
    "ready_s < 2": ("history", lambda f: f["ready_s"] < 2),
    "soak_rss_mb_per_10k_changes < 5": ("soak", lambda f: f["soak_rss_mb_per_10k_changes"] < 5),
    "soak_rss_anon_mb_end < 150": ("soak", lambda f: f["soak_rss_anon_mb_end"] < 150),
    "soak_fds_growth flat (<= 2)": ("soak", lambda f: f["soak_fds_growth"] <= 2),
    "soak_agreed": ("soak", lambda f: f["soak_agreed"]),
    "soak_settle_s <= 5": ("soak", lambda f: f["soak_agreed"] and f["soak_settle_s"] <= 5),
    "burst_converge_s <= 5": ("burst", lambda f: f["burst_agreed"] and f["burst_converge_s"] <= 5),
    "burst_soc_writes <= 6 per ticket": (
        "burst",
        lambda f: f["burst_soc_writes"] <= 6 * f["burst_links"],
    ),
    "idle: <= 1 request per desk per pass": (
        "idle",
        lambda f: max(f["idle_cw_requests_per_pass"], f["idle_soc_requests_per_pass"]) <= 1,
    ),
    "console_page_p99_ms < 200 (10k links)": (
        "console",
        lambda f: f["console_links"] >= 10_000 and f["console_page_p99_ms"] < 200,
    ),
    "burst_cw_reads <= 4 per ticket": (
        "burst",
        lambda f: f["burst_cw_reads"] <= 4 * f["burst_links"],
    ),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the event log and the pipeline (and print one JSON line with --json)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Measure the event log (appends, replay; raw sqlite3 and the eventsourcing\n"
            "library as peers), the pipeline (signed callback ingest against a plain aiohttp\n"
            "handler; sync latency between the two simulators through the daemon process),\n"
            "replay of a 100k- and a 1M-event log (wall time, peak RSS of the replaying\n"
            "process) and the daemon's restart to ready on that log, in one run.\n"
            "The full run takes 10-20 minutes on a quiet 2-core machine (most of it writing\n"
            "the 1M-event log); --quick is a smoke run for CI (small sizes). With\n"
            "--keep-history DIR the logs are written into DIR once and later runs start\n"
            "from copies of them (the history part then takes a few minutes).\n"
            "The soak (--only soak, not part of the default run) drives steady two-way\n"
            "traffic on 40 linked tickets for --minutes (default 10) and reports the\n"
            "daemon's memory growth per 10k changes and its open file descriptors.\n"
            "The burst (--only burst, not part of the default run) changes 16 linked\n"
            "tickets 100 times each and reports how long and how many API calls the\n"
            "desks take to agree. The idle part (--only idle) counts the requests a\n"
            "reconciliation pass costs when nothing changes, and that per hour at the\n"
            "default poll periods.\n\n"
            "exit codes: 0 measured (targets are printed, not judged), 2 bad option"
        ),
        epilog=(
            "examples:\n  socbridge bench --json\n  socbridge bench --quick --json\n"
            "  socbridge bench --json --only pipeline\n"
            "  socbridge bench --json --only history --keep-history /var/tmp/socbridge-history\n"
            "  socbridge bench --json --only soak --minutes 3\n"
            "  socbridge bench --json --only burst"
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--events", type=int, default=None, help="store bench log size (default 100000)")
    p.add_argument(
        "--sequential", type=int, default=None, help="sequential appends timed (default 3000)"
    )
    p.add_argument(
        "--history", type=int, default=None,
        help="events in the large replay log (default 1000000; the small one is a tenth)",
    )  # fmt: skip
    p.add_argument(
        "--only", action="append", choices=ALL_PARTS, default=None,
        help="run only this part (repeatable; default: store, pipeline and history; "
        "the soak, burst, idle and console parts run only when named)",
    )  # fmt: skip
    p.add_argument(
        "--minutes", type=float, default=None,
        help="how long the soak's traffic runs (default 10; 1 with --quick)",
    )  # fmt: skip
    p.add_argument("--dir", type=Path, default=None, help="folder for the temp files")
    p.add_argument(
        "--keep-history", type=Path, default=None, metavar="DIR",
        help="keep the history logs in DIR and reuse them in later runs (written once; "
        "about 0.8 GB for 1M events)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


async def cmd_bench(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    events = args.events or (4_000 if quick else 100_000)
    sequential = args.sequential or (200 if quick else 3_000)
    large = args.history or (10_000 if quick else 1_000_000)
    sizes = (
        pipeline.Sizes(links=2, samples=3, ingest_requests=300, rounds=1)
        if quick
        # 100 changes per direction: with fewer than 100 samples the nearest-rank p99 is
        # simply the slowest one.
        else pipeline.Sizes(links=8, samples=100, ingest_requests=3000, rounds=3)
    )
    parts = set(args.only or PARTS)
    figures: dict[str, Any] = {"quick": quick, "loadavg_start": loadavg()}
    took: dict[str, float] = {}
    bars = Bars(wanted(args.json))
    bar = bars.task("bench", len(parts), unit="parts")

    async def part(name: str, work: Awaitable[dict[str, Any]]) -> None:
        started = time.perf_counter()
        if bar is not None:
            bar.describe(f"bench: {name}")
        figures.update(await work)
        took[name] = round(time.perf_counter() - started, 1)
        if bar is not None:
            bar(len(took), None)

    with bars:
        if "store" in parts:
            await part("store", store_bench.run(events, sequential, args.dir))
        with tempfile.TemporaryDirectory(prefix="socbridge-bench-", dir=args.dir) as tmp:
            root = Path(tmp)
            if "pipeline" in parts:
                await part("pipeline", pipeline.run_pipeline(root, sizes))
            if "history" in parts:
                await part(
                    "history",
                    history.figures(root, large, 1 if quick else 3, quick, args.keep_history),
                )
            if "soak" in parts:
                minutes = args.minutes if args.minutes is not None else (1.0 if quick else 10.0)
                await part("soak", soak.run_soak(root, minutes))
            if "burst" in parts:
                shape = burst.Shape(links=4, changes_per_link=20) if quick else burst.Shape()
                await part("burst", burst.run_burst(root, shape))
            if "idle" in parts:
                await part("idle", burst.run_idle(root, window_s=10.0 if quick else 30.0))
            if "console" in parts:
                links = 500 if quick else 10_000
                await part("console", console_bench.run_console(root, links, 10 if quick else 50))
    met = {name: bool(check(figures)) for name, (part, check) in TARGETS.items() if part in parts}
    if met:
        figures["pipeline_targets"] = met
        figures["pipeline_targets_met"] = all(met.values())
    figures["loadavg_end"] = loadavg()
    figures["elapsed_s"] = round(time.perf_counter() - began, 1)
    figures["elapsed_by_part_s"] = took
    bad = [k for k, v in figures.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"non-finite figures: {bad}")
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK
