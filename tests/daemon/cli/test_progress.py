"""The long commands' progress bars, as a person and as a script see them (issue 18, part 3).

Each command runs as a real process on a small real log (the benchmark's history
generator): under a pseudo-terminal it draws a bar with a rate and an ETA on
stderr; with its stdout piped, or with ``--json``, it draws nothing at all and
prints what it printed before bars existed.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from daemon.bench.history import generate
from eventstore import EventStore, export_ndjson
from tests.support.paths import REPO

#: What rich writes for a bar: its line-drawing characters, or any escape sequence.
BAR_MARKS = ("━", "╸", "╺", "\x1b[")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: A bar as the terminal shows it, escapes left out: "replaying ━━━ 4000/4000 61,234 events/s
#: ETA 0:00:00".
BAR = re.compile(r"(\d+)/(\d+) ([\d,.]+|\?) (events|parts)/s ETA (\d+:\d\d:\d\d|-:--:--)")


class Logs(NamedTuple):
    root: Path
    db: Path
    ndjson: Path
    events: int


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    """A history of some 4000 events and its NDJSON export."""
    root = tmp_path_factory.mktemp("progress")
    db, ndjson = root / "events.db", root / "events.ndjson"

    async def build() -> int:
        events = await generate(db, 4000, links=20)
        store = await EventStore.open(db, readonly=True)
        try:
            with ndjson.open("wb") as out:
                await export_ndjson(store, out)
        finally:
            await store.close()
        return events

    return Logs(root, db, ndjson, asyncio.run(build()))


def argv_for(command: str, logs: Logs, run: str) -> tuple[list[str], str]:
    """The command's argv (a fresh target for ``run`` where it writes) and its bar's words."""
    db, root = str(logs.db), logs.root
    if command == "replay":
        return ["replay", "--db", db, "--dry-run"], "replaying"
    if command == "audit":
        return ["audit", "--db", db], "auditing"
    if command == "verify":
        return ["verify", "--db", db], "verifying"
    if command == "export":
        return ["export", "--db", db, "--output", str(root / f"export-{run}.ndjson")], "exporting"
    if command == "import":
        return ["import", "--db", str(root / f"import-{run}.db"), str(logs.ndjson)], "importing"
    assert command == "bench"
    bench = ["bench", "--quick", "--only", "store", "--events", "500", "--sequential", "20"]
    return [*bench, "--dir", str(root)], "bench: store"


def environment() -> dict[str, str]:
    """This environment without what would make rich guess differently about the terminal."""
    unset = ("FORCE_COLOR", "NO_COLOR", "TTY_", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "120"}


def on_terminal(args: list[str], deadline_s: float = 90.0) -> tuple[int, str]:
    """Run ``socbridge ARGS`` with a pseudo-terminal as its stdin, stdout and stderr; its
    exit code and everything the terminal received."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling tty and all three streams
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "daemon", *args], environment())
    received = bytearray()
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            received += chunk
        else:
            os.kill(pid, 9)
            raise AssertionError(f"socbridge {args} still running after {deadline_s} s")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), received.decode("utf-8", errors="replace")


def piped(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def text_lines(terminal: str) -> list[str]:
    """The lines a terminal shows once the bar is drawn over: escapes and bar lines left out."""
    lines = ANSI.sub("", terminal).replace("\r\n", "\n").split("\n")
    return [line for line in lines if not any(mark in line for mark in BAR_MARKS)]


def no_bar(text: str) -> None:
    assert not any(mark in text for mark in BAR_MARKS), text[-2000:]
    assert not BAR.search(text) and "ETA" not in text, text[-2000:]


COMMANDS = ("replay", "audit", "verify", "export", "import", "bench")


@pytest.mark.parametrize("command", COMMANDS)
def test_on_a_terminal_a_bar_with_rate_and_eta_piped_none_and_the_same_output(
    command: str, logs: Logs
) -> None:
    args, words = argv_for(command, logs, "terminal")
    code, terminal = on_terminal(args)
    shown = ANSI.sub("", terminal)
    bars = [m for m in BAR.finditer(shown)]
    assert bars, f"no bar with a rate and an ETA on the terminal:\n{terminal[-3000:]}"
    assert words in shown and "━" in terminal
    # The last drawing of the bar is the finished one: all done, a rate, nothing left.
    done, total, rate, unit, eta = bars[-1].groups()
    assert done == total and rate != "?" and eta == "0:00:00", bars[-1].group(0)
    assert unit == ("parts" if command == "bench" else "events")
    if command != "bench":
        assert int(total) == logs.events, bars[-1].group(0)

    args, _ = argv_for(command, logs, "piped")
    result = piped(args)
    assert result.returncode == code, result.stderr
    no_bar(result.stdout + result.stderr)
    if command == "bench":  # its figures are timings: the same keys, then
        keys = [line.split()[0] for line in result.stdout.splitlines()]
        assert keys[:2] == ["quick", "loadavg_start"] and "elapsed_by_part_s" in keys
        return
    # What the terminal showed besides the bar is what a script reads (the log's name aside:
    # export and import write a file of their own each run).
    expected = (result.stdout + result.stderr).replace("piped", "terminal")
    assert "\n".join(text_lines(terminal)).strip() == expected.strip()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "export"])
def test_json_on_a_terminal_prints_only_the_json(command: str, logs: Logs) -> None:
    args, _ = argv_for(command, logs, "json")
    code, terminal = on_terminal([*args, "--json"])
    no_bar(terminal)
    lines = terminal.replace("\r\n", "\n").strip().splitlines()
    assert len(lines) == 1, terminal[-3000:]
    orjson.loads(lines[0])  # one JSON document, nothing around it
    assert code in (0, 1)


def test_export_to_stdout_draws_no_bar_among_the_events(logs: Logs) -> None:
    code, terminal = on_terminal(["export", "--db", str(logs.db)])
    assert code == 0
    no_bar(terminal)
    lines = terminal.replace("\r\n", "\n").strip().splitlines()
    assert len(lines) == logs.events + 1
    assert lines[-1].startswith(f"exported {logs.events} events")
