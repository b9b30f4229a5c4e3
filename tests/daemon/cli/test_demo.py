"""``socbridge demo`` (what ``make demo`` runs): the scripted story holds, step by step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO


def test_the_demo_plays_every_step_and_keeps_its_log(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--keep", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith("  ok    ")]
    assert len(steps) == 6 and "FAIL" not in done.stdout
    assert "chain intact" in done.stdout and "\ndemo: every step held\n" in done.stdout
    # It ends with where the console is (served while it runs: not on a terminal here).
    assert any(line.startswith("console: http://127.0.0.1:") for line in done.stdout.splitlines())
    assert (tmp_path / "run" / "events.db").stat().st_size > 0
    abandoned = subprocess.run(
        [sys.executable, "-m", "daemon", "events", "--db", str(tmp_path / "run" / "events.db"),
         "--type", "outbox.command.abandoned"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    [row] = abandoned.stdout.splitlines()[1:]
    assert "kind=cw.add_note reason=link was unlinked" in row
