"""``socbridge run`` refuses what a restart cannot fix with one line and exit 2, before the
log is opened; a reader that goes away (``| head``) ends a command quietly."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from daemon.simulators.rehearsal import write_config
from eventstore import EventStore, NewEvent
from tests.support.paths import REPO


def test_a_taken_port_is_named_and_nothing_is_appended(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "socbridge.toml"
        write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", port, 5.0)
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "run", "--config", str(config)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"socbridge: error: port {port} on 127.0.0.1 is taken by another process; stop it, "
        "or set [server] port (and host) to a free one"
    )
    assert not (tmp_path / "events.db").exists()  # refused before the log was opened


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    db = tmp_path / "events.db"

    async def fill() -> None:
        store = await EventStore.open(db, synchronous="NORMAL")
        try:
            events = [NewEvent(f"cw:ticket:{i}", "t", {"pad": "x" * 400}) for i in range(3000)]
            await store.append(events)
        finally:
            await store.close()

    asyncio.run(fill())  # about 1.5 MB of NDJSON: far more than a pipe holds
    for command in (["export"], ["events"], ["events", "--json"]):
        reader = subprocess.Popen(
            [sys.executable, "-m", "daemon", *command, "--db", str(db)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert reader.stdout is not None
        assert reader.stdout.readline()
        reader.stdout.close()  # as `| head -1` does once it has its line
        _, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, (command, err)
        assert b"error" not in err and b"Traceback" not in err, (command, err)


def test_a_start_that_fails_on_a_secret_appends_nothing(tmp_path: Path) -> None:
    config = tmp_path / "socbridge.toml"
    write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 0, 5.0)
    db = tmp_path / "events.db"

    async def seed() -> int:
        store = await EventStore.open(db, synchronous="NORMAL")
        try:
            await store.append([NewEvent("cw:ticket:1", "t", {})])
            return await store.last_position()
        finally:
            await store.close()

    before = asyncio.run(seed())
    (tmp_path / "secrets" / "cw_private_key").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("socbridge: error: ") and "cw_private_key" in done.stderr
    assert "Traceback" not in done.stderr

    async def head() -> int:
        store = await EventStore.open(db, synchronous="NORMAL")
        try:
            return await store.last_position()
        finally:
            await store.close()

    # Before the secrets were read first, `admin.config.applied` was recorded here.
    assert asyncio.run(head()) == before
