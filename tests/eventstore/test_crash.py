"""SIGKILL at random moments: the log stays sound and every acknowledged append survives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from eventstore import EventStore, verify
from tests.support.paths import REPO


def run_and_kill(db: Path, seed: int, acknowledged_lines: int) -> list[list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.eventstore.crash_appender", str(db), str(seed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    acked: list[list[str]] = []
    for _ in range(acknowledged_lines):
        line = proc.stdout.readline()
        assert line, "the appender died on its own"
        acked.append(line.split())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return acked


async def test_sigkill_never_loses_an_acknowledged_append_nor_leaves_a_partial_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    rng = random.Random(20261129)
    acked: list[list[str]] = []
    for round_ in range(6):
        acked += run_and_kill(db, seed=round_, acknowledged_lines=rng.randint(1, 150))
        store = await EventStore.open(db)
        report = await verify(store)
        assert report.ok, report.problem
        events = [e async for e in store.read()]
        ids = {e.event_id for e in events}
        missing = [i for line in acked for i in line if i not in ids]
        assert not missing, f"acknowledged events lost after SIGKILL: {missing[:3]}"
        # No partial batch: every batch is either whole or absent.
        sizes: dict[str, int] = {}
        for e in events:
            sizes[e.data["batch"]] = sizes.get(e.data["batch"], 0) + 1
        assert all(sizes[b] == e.data["size"] for e in events for b in [e.data["batch"]])
        await store.close()
