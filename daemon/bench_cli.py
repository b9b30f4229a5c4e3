"""``socbridge bench``: print benchmark figures, each next to a peer measured in the same run."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from daemon.bench import store as store_bench
from daemon.cli import EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the event log (and print one JSON line with --json)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Measure appends (sequential and 32 concurrent appenders), replay, the raw\n"
            "sqlite3 ceiling and the eventsourcing library as a peer, in one run.\n"
            "The full run takes a few minutes; --quick is a smoke run for CI.\n\n"
            "exit codes: 0 measured (figures are printed, targets are not judged), 2 bad option"
        ),
        epilog="examples:\n  socbridge bench --json\n  socbridge bench --quick --json",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--events", type=int, default=None, help="log size (default 100000)")
    p.add_argument(
        "--sequential", type=int, default=None, help="sequential appends timed (default 3000)"
    )
    p.add_argument("--dir", type=Path, default=None, help="folder for the temp files")
    p.set_defaults(func=cmd_bench)


async def cmd_bench(args: argparse.Namespace) -> int:
    events = args.events or (4_000 if args.quick else 100_000)
    sequential = args.sequential or (200 if args.quick else 3_000)
    figures = {"quick": bool(args.quick)}
    figures.update(await store_bench.run(events, sequential, args.dir))
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK
