"""``socbridge replay``: a summary from the log alone, the same bytes twice, a policy diff."""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path

import orjson
import pytest

from daemon.cli import main
from daemon.replay_cli import run_replay
from eventstore import EventStore
from tests.projections.history import Log
from tests.projections.test_rebuild import RULES


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
        assert captured.err == ""  # no progress bar when stderr is not a terminal
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


async def test_progress_bar_goes_to_a_terminal_only(db: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    store = await EventStore.open(db, readonly=True)
    args = argparse.Namespace(until=None, policy=[], json=True)
    err = Terminal()
    try:
        out = await run_replay(store, None, args, err)
    finally:
        await store.close()
    assert "replaying [" in err.getvalue() and "100%" in err.getvalue()
    assert "replaying" not in out


async def test_replay_streams_the_log_in_batches_to_the_same_bytes(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daemon.replay_cli as replay_cli

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
        real = store.read_batch

        async def spy(position: int, limit: int) -> list:  # type: ignore[type-arg]
            reads.append(limit)
            return await real(position, limit)

        monkeypatch.setattr(store, "read_batch", spy)
        monkeypatch.setattr(store, "read", None)  # the streaming path must not read it all
        await run_replay(
            store, None, argparse.Namespace(until=None, policy=[], json=True), io.StringIO()
        )
    finally:
        await store.close()
    assert reads and set(reads) == {2} and len(reads) >= last // 2
    assert outputs[3]["position"] == 3 and outputs[None]["position"] == last
