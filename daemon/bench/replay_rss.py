"""Replay wall time and peak RSS, measured on ``socbridge replay`` run as a child process.

The child is the real command (``python -m daemon replay --db LOG --json``), so
the figures are what an operator gets, interpreter start included. Its peak
resident set comes from ``os.wait4`` (the kernel's ``ru_maxrss`` for exactly
that child), so the benchmark process's own memory (it generated the log)
never counts. A replay of an empty log gives the baseline: what the
interpreter and the imports cost before a single event is folded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ReplayRun:
    events: int
    wall_s: float
    peak_rss_mb: float
    state_digest: str


def _run_child(db: Path, env: dict[str, str] | None) -> ReplayRun:
    cmd = [sys.executable, "-m", "daemon", "replay", "--db", str(db), "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"replay exited with {proc.returncode}: {err.decode()[-2000:]}")
    summary = orjson.loads(out)["summary"]
    # ru_maxrss is in kilobytes on Linux.
    return ReplayRun(summary["events"], wall, usage.ru_maxrss / 1024, summary["state_digest"])


async def measure(db: Path, env: dict[str, str] | None = None) -> ReplayRun:
    """Replay ``db`` in a child process (with ``env``); its wall time and peak RSS."""
    return await asyncio.to_thread(_run_child, db, env)
