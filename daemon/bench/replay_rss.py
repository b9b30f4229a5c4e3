"""Replay wall time and peak RSS, measured on ``socbridge replay`` run as a child process.

The child runs the real command (``socbridge replay --db LOG --json``, through
``daemon.cli.main.main``), so the figures are what an operator gets, interpreter
start included. Its peak resident set is the child's own ``VmHWM`` (read from
``/proc/self/status`` as it exits), not ``ru_maxrss``: Linux carries the
pre-``exec`` high-water mark of the forked child into ``ru_maxrss``, which
would report the benchmark process's own size (it generated the log). A replay
of an empty log gives the baseline: what the interpreter and the imports cost
before a single event is folded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]

#: ``socbridge replay``, then the process's own peak RSS on the last line of stderr.
CHILD = """
import sys
from daemon.cli.main import main
code = main(["replay", "--db", sys.argv[1], "--json"])
sys.stdout.flush()
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
sys.stderr.write("\\n" + peak[0])
sys.exit(code)
"""


@dataclass
class ReplayRun:
    events: int
    wall_s: float
    peak_rss_mb: float
    state_digest: str


def _run_child(db: Path, env: dict[str, str] | None) -> ReplayRun:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(db)], cwd=REPO, capture_output=True, env=env, check=False
    )
    wall = time.perf_counter() - start
    err = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"replay exited with {result.returncode}: {err[-2000:]}")
    summary = orjson.loads(result.stdout)["summary"]
    peak_kb = int(err.strip().splitlines()[-1].split()[1])  # "VmHWM:  123456 kB"
    return ReplayRun(summary["events"], wall, peak_kb / 1024, summary["state_digest"])


async def measure(db: Path, env: dict[str, str] | None = None) -> ReplayRun:
    """Replay ``db`` in a child process (with ``env``); its wall time and peak RSS."""
    return await asyncio.to_thread(_run_child, db, env)
