"""``socbridge verify | export | import`` as an operator runs them: the real command line,
in this process (a subprocess per call costs seconds on a loaded host), and through the
installed entry point in a subprocess where that is what is being shown."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from eventstore import EventStore, NewEvent
from tests.support.cli import run_socbridge


def make_log(path: Path, n: int = 12) -> None:
    async def fill() -> None:
        s = await EventStore.open(path)
        await s.append(
            [NewEvent(stream=f"cw:ticket:{i % 3}", type="t", data={"i": i}) for i in range(n)]
        )
        await s.close()

    asyncio.run(fill())


def test_verify_reports_an_intact_log(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    make_log(db)
    result = run_socbridge("verify", "--db", str(db), entry=True)
    assert result.returncode == 0
    assert b"intact, 12 events" in result.stdout
    result = run_socbridge("verify", "--db", str(db), "--json")
    report = orjson.loads(result.stdout)
    assert report["ok"] is True and report["checked"] == 12


def test_verify_names_the_tampered_position_and_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    make_log(db)
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("DROP TRIGGER events_refuse_update")
    raw.execute("""UPDATE events SET data = '{"i":1000}' WHERE position = 9""")
    raw.close()
    result = run_socbridge("verify", "--db", str(db))
    assert result.returncode == 1
    assert b"BROKEN at position 9" in result.stdout


def test_verify_through_a_config_file(tmp_path: Path) -> None:
    from daemon.simulators.rehearsal import write_config

    config = tmp_path / "socbridge.toml"
    write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 3, 5.0)
    db = tmp_path / "events.db"  # write_config puts the log beside the config
    make_log(db)
    result = run_socbridge("verify", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert str(db).encode() in result.stdout


def test_bad_config_is_a_usage_error_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "socbridge.toml"
    config.write_text('[store]\npath = "x.db"\nsynchronus = "FULL"\n')  # misspelt key
    result = run_socbridge("verify", "--config", str(config))
    assert result.returncode == 2
    assert b"store.synchronus" in result.stderr and b"unknown key" in result.stderr


def test_unusable_database_exits_3_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    db.write_bytes(b"garbage" * 1000)
    result = run_socbridge("verify", "--db", str(db))
    assert result.returncode == 3
    assert b"not a valid SQLite database" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["verify", "export", "events", "replay", "audit"])
def test_a_log_that_does_not_exist_is_named_and_nothing_is_created(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "no-such-folder" / "events.db"
    result = run_socbridge(command, "--db", str(missing))
    assert result.returncode == 3
    assert result.stderr.decode().strip() == (
        f"socbridge: error: event log {missing} does not exist; check --db, or the [store] "
        "path of --config"
    )
    assert not missing.parent.exists()


def test_export_then_import_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    make_log(db, 30)
    dump = tmp_path / "backup.ndjson"
    result = run_socbridge("export", "--db", str(db), "--output", str(dump))
    assert result.returncode == 0 and b"exported 30 events" in result.stderr
    piped = run_socbridge("export", "--db", str(db))
    assert piped.stdout == dump.read_bytes()
    restored = tmp_path / "restored.db"
    result = run_socbridge("import", "--db", str(restored), str(dump))
    assert result.returncode == 0 and b"imported 30 events" in result.stdout
    assert run_socbridge("export", "--db", str(restored)).stdout == dump.read_bytes()
    assert run_socbridge("verify", "--db", str(restored)).returncode == 0


def test_refused_import_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    make_log(db, 5)
    lines = run_socbridge("export", "--db", str(db)).stdout.splitlines()
    del lines[2]
    restored = tmp_path / "restored.db"
    result = run_socbridge("import", "--db", str(restored), "-", stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 1
    assert b"line 3" in result.stderr and b"nothing was written" in result.stderr
    assert (
        run_socbridge("verify", "--db", str(restored), "--json").stdout.count(b'"checked":0') == 1
    )
