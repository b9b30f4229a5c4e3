"""``socbridge replay``: a summary from the log alone, the same bytes twice, a policy diff."""

from __future__ import annotations

import argparse
import asyncio
import io
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.cli.main import main
from daemon.cli.replay import rebuild_projection, run_rebuild, run_replay
from daemon.simulators.harness import Bridge
from eventstore import EventStore, RecordedEvent
from projections.fold import fold
from projections.replay import projection_rows
from tests.support.history import Log, carried_history, soc_seen
from tests.support.rules import RULES
from tests.support.tickets import soc_ticket_for

PROJECTION_TABLES = (
    "projection_links", "projection_outbox", "projection_meta", "projection_checkpoints"
)  # fmt: skip


async def build(path: Path) -> None:
    log = await Log.open(path)
    await log.conflict()
    await log.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    asyncio.run(build(path))
    return path


def test_replaying_the_same_log_twice_prints_the_same_bytes(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for _ in range(2):
        assert main(["replay", "--db", str(db)]) == 0
        captured = capsys.readouterr()
        outputs.append(captured.out)
        assert captured.err == ""  # no progress bar off a terminal (test_progress.py)
    assert outputs[0] == outputs[1]
    assert "conflicts: 1" in outputs[0] and "links: linked" in outputs[0]


def test_until_shows_the_state_as_it_was(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["replay", "--db", str(db), "--json", "--until", "3"])
    early = orjson.loads(capsys.readouterr().out)["summary"]
    main(["replay", "--db", str(db), "--json", "--until", "2000-01-01T00:00:00Z"])
    empty = orjson.loads(capsys.readouterr().out)["summary"]
    assert early["position"] == 3 and early["links"] == {"requested": 1}
    assert empty["events"] == 0


async def test_policy_preview_prints_a_diff_of_the_touched_decision_only(db: Path) -> None:
    store = await EventStore.open(db, readonly=True)
    args = argparse.Namespace(until=None, policy=[("priority", "cw")], json=False)
    try:
        text = await run_replay(store, RULES, args, io.StringIO())
        again = await run_replay(store, RULES, args, io.StringIO())
        args.policy = [("status", "soc")]
        same = await run_replay(store, RULES, args, io.StringIO())
    finally:
        await store.close()
    assert text == again
    assert "policy preview (priority=cw): 1 of" in text
    removed = [line for line in text.splitlines() if line.startswith("- ")]
    added = [line for line in text.splitlines() if line.startswith("+ ")]
    assert any('"winner":"soc"' in line for line in removed)
    assert any('"winner":"cw"' in line for line in added)
    assert "policy preview (status=soc): 0 of" in same


@pytest.mark.parametrize(
    "argv",
    [["--policy", "status=newest"], ["--policy", "summary=soc"], ["--until", "last week"]],
)
def test_bad_arguments_are_refused_with_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--db", str(db), *argv])
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


def test_policy_without_a_config_is_refused(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--db", str(db), "--policy", "status=soc"]) == 2
    assert "--policy needs --config" in capsys.readouterr().err


def test_a_missing_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--db", str(tmp_path / "nope.db")]) == 3
    assert not (tmp_path / "nope.db").exists()


async def test_replay_streams_the_log_in_batches_to_the_same_bytes(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daemon.cli.replay as replay_cli

    store = await EventStore.open(db, readonly=True)
    try:
        last = await store.last_position()
        whole = [e async for e in store.read()]
        outputs = {}
        for until in (None, 3, last + 5):
            args = argparse.Namespace(until=until, policy=[], json=True)
            monkeypatch.setattr(replay_cli, "REPLAY_BATCH", 2)
            batched = await run_replay(store, None, args, io.StringIO())
            # The same summary as folding the whole log held in memory at once.
            expected = replay_cli.replay(whole, until=until).to_dict()
            assert batched == replay_cli.render(expected, None, {}, True)
            outputs[until] = orjson.loads(batched)["summary"]

        # Never more than one batch is read at a time, and never the whole log.
        reads: list[int] = []
        real = store.read_batches

        async def spy(*args: Any, **kwargs: Any) -> AsyncIterator[list[Any]]:
            assert kwargs["batch_size"] == 2
            async for batch in real(*args, **kwargs):
                reads.append(len(batch))
                yield batch

        monkeypatch.setattr(store, "read_batches", spy)
        monkeypatch.setattr(store, "read", None)  # the streaming path must not read it all
        await run_replay(
            store, None, argparse.Namespace(until=None, policy=[], json=True), io.StringIO()
        )
    finally:
        await store.close()
    assert reads and set(reads) <= {1, 2} and len(reads) >= last // 2 and sum(reads) == last
    assert outputs[3]["position"] == 3 and outputs[None]["position"] == last


def table_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """The projection tables as they stand in the file (read as another process would)."""
    conn = sqlite3.connect(db)
    try:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in PROJECTION_TABLES
        }
    finally:
        conn.close()


def corrupt(db: Path) -> None:
    """Damage the projection tables the way a bad restore or a stray edit would."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE projection_links SET state = 'unlinked', body = '{\"junk\": 1}'")
        conn.execute(
            "INSERT INTO projection_outbox VALUES ('phantom', 'cw:999', "
            '\'{"command_id": "phantom", "kind": "cw.update_ticket"}\')'
        )
        conn.execute("DELETE FROM projection_meta WHERE key = 'conflicts'")
        conn.commit()
    finally:
        conn.close()


def expected_rows(
    events: list[RecordedEvent], position: int
) -> dict[str, list[tuple[object, ...]]]:
    rows = projection_rows(fold(e for e in events if e.position <= position))
    return {table: sorted(found.values()) for table, found in rows.items()} | {
        "projection_checkpoints": [("bridge", position)]
    }


async def test_replay_repairs_corrupted_projection_rows_while_the_daemon_runs(
    tmp_path: Path,
) -> None:
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None
        db = bridge.config.store.path
        cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
        soc = await soc_ticket_for(bridge, cw["id"])
        await bridge.settled()
        await bridge.engine.save()
        corrupt(db)

        # The real command, from a second process, while the daemon keeps running; then
        # again (in this process, through its own connections, as a second process would).
        runs = [await cli_process("replay", "--db", str(db))]
        err = io.StringIO()
        runs.append((0, await run_rebuild(db, argparse.Namespace(json=False), err), ""))
        runs[1] = (0, runs[1][1], err.getvalue())
        assert [code for code, _, _ in runs] == [0, 0]
        wrote = [line for _, out, _ in runs for line in out.splitlines() if "wrote" in line]
        assert len(wrote) == 2
        positions = [int(line.split("position ")[1].split(":")[0]) for line in wrote]
        # The running daemon may save a newer checkpoint between the runs (its pollers keep
        # appending); at the same checkpoint the two runs print the same bytes.
        assert 0 < positions[0] <= positions[1]
        assert positions[0] != positions[1] or wrote[0] == wrote[1]
        assert "differed from the rebuilt ones" in runs[0][2]  # what was repaired: stderr
        assert "differed" not in runs[1][2]  # nothing left to repair the second time
        # Rows and checkpoint agree (the checkpoint read first: its events are in the log).
        rows = table_rows(db)
        saved = rows["projection_checkpoints"][0][1]
        assert isinstance(saved, int) and saved >= positions[1]
        events = [e async for e in bridge.store.read()]
        assert rows == expected_rows(events, saved)
        checkpoint = saved

        # The daemon carries on saving its own checkpoints over the repaired rows.
        await bridge.analyst.set(soc["id"], priority="urgent")
        await bridge.until(
            lambda: _priority(bridge, cw["id"], "Priority 1 - Emergency Response"),
            "the SOC's change to reach ConnectWise",
        )
        await bridge.settled()
        await bridge.stop_daemon()  # saves its checkpoint on the way out
        store = await EventStore.open(db, readonly=True)
        try:
            events = [e async for e in store.read()]
        finally:
            await store.close()
        rows = table_rows(db)
        saved_at = rows["projection_checkpoints"][0][1]
        assert isinstance(saved_at, int) and saved_at > checkpoint
        assert rows == expected_rows(events, saved_at)  # rows and checkpoint agree
        link = orjson.loads(str(rows["projection_links"][0][3]))
        assert link["fields"]["priority"]["cw"] == "urgent"


async def _priority(bridge: Bridge, cw_id: int, name: str) -> bool:
    return bool((await bridge.technician.ticket(cw_id))["priority"]["name"] == name)


async def cli_process(*argv: str) -> tuple[int, str, str]:
    """``socbridge ARGV`` as its own process; exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_checkpoint_saved_meanwhile_is_folded_on_to_before_writing(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.live.engine.save()  # type: ignore[union-attr]
    stale = fold(await log.events())  # rows folded to this checkpoint...
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
    await log.deliver("cw.update_ticket")
    await log.restart()  # ...then the daemon saves a newer one
    moved_to = log.live.engine.state.position  # type: ignore[union-attr]
    assert moved_to > stale.position
    reader = await EventStore.open(tmp_path / "e.db", readonly=True)
    try:
        _, written = await rebuild_projection(reader, log.store, io.StringIO(), state=stale)
    finally:
        await reader.close()
    events = await log.events()
    await log.close()
    assert written.position == moved_to
    assert table_rows(tmp_path / "e.db") == expected_rows(events, moved_to)


def test_previews_write_nothing(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt(db)
    before = table_rows(db)
    for argv in (["--until", "3"], ["--dry-run"]):
        assert main(["replay", "--db", str(db), *argv]) == 0
        assert "preview only: no projection row written" in capsys.readouterr().out
    assert table_rows(db) == before


async def test_policy_preview_prints_the_changed_decision_and_its_consequences(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.db"
    await carried_history(path)
    store = await EventStore.open(path, readonly=True)
    args = argparse.Namespace(until=None, policy=[("priority", "cw")], json=False)
    try:
        text = await run_replay(store, RULES, args, io.StringIO())
        again = await run_replay(store, RULES, args, io.StringIO())
    finally:
        await store.close()
    assert text == again
    assert "2 of 9 inputs would have been decided differently (1 by the policy itself, " \
        "1 downstream of those)" in text  # fmt: skip
    heads = [line for line in text.splitlines() if line.startswith("@@")]
    assert [h.rsplit("(", 1)[1] for h in heads] == ["policy) @@", "downstream) @@"]
    assert "preview only: no projection row written" in text
