"""The command surface an operator relies on: every command's ``--help`` shows examples and
exit codes, and the commands that print data print one JSON object with ``--json``.

The ``--json`` commands run through the real parser against both simulators (started by the
same code as ``socbridge sim all``) and a real event log.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from daemon.cli.main import build_parser
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.rehearsal import Rehearsal, start_rehearsal
from daemon.simulators.soc import fixture as socfx


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(
        parser: argparse.ArgumentParser, prefix: str
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{prefix}{name}", sub
                    yield from walk(sub, f"{prefix}{name} ")

    yield from walk(build_parser(), "")


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_every_command_help_has_examples_and_exit_codes(name: str) -> None:
    parser = dict(_commands())[name]
    text = parser.format_help().lower()
    assert "example" in text, f"socbridge {name} --help shows no example"
    assert "exit code" in text, f"socbridge {name} --help does not document its exit codes"
    assert f"socbridge {name}" in text, f"socbridge {name} --help has no example of itself"


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    """The real parser and command function; the output must be exactly one JSON object."""
    args = build_parser().parse_args(list(argv))
    result = args.func(args)
    code = await result if hasattr(result, "__await__") else result
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got: {out!r}"
    return int(code), json.loads(lines[0])


@pytest.fixture
async def rehearsal(tmp_path: Path) -> AsyncIterator[Rehearsal]:
    sims = await start_rehearsal("127.0.0.1", 0, tmp_path / "socbridge.toml", None)
    try:
        yield sims
    finally:
        await sims.stop()


async def test_remote_commands_print_one_json_object(
    rehearsal: Rehearsal, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(rehearsal.config_path)
    code, doc = await run(capsys, "validate", "--config", config, "--json")
    assert code == 0 and doc["ok"] is True and doc["failed"] == 0
    assert any(c["name"] == "permission Service Desk / Service Tickets" for c in doc["checks"])  # type: ignore[union-attr]

    code, doc = await run(capsys, "callbacks", "status", "--config", config, "--json")
    assert code == 1 and doc["ok"] is False and doc["state"]["action"] == "absent"  # type: ignore[index]
    code, doc = await run(capsys, "callbacks", "install", "--config", config, "--json")
    assert code == 0 and doc["state"]["action"] == "installed"  # type: ignore[index]
    code, doc = await run(capsys, "webhooks", "install", "--config", config, "--json")
    assert code == 0 and doc["healthy"] is True
    code, doc = await run(capsys, "webhooks", "status", "--config", config, "--json")
    assert code == 0 and doc["webhook"]["secret_matches"] is True  # type: ignore[index]

    code, doc = await run(capsys, "remove", "--config", config, "--json")
    assert code == 0 and doc["removed"] is True
    code, doc = await run(capsys, "callbacks", "status", "--config", config, "--json")
    assert code == 1 and doc["state"]["action"] == "absent"  # type: ignore[index]
    secrets = (cwfx.API_PRIVATE_KEY, cwfx.API_PUBLIC_KEY, socfx.API_TOKEN)
    assert not any(s in json.dumps(doc) for s in secrets)


async def test_a_missing_secret_is_a_json_error_not_a_traceback(
    rehearsal: Rehearsal, capsys: pytest.CaptureFixture[str]
) -> None:
    (rehearsal.config_path.parent / "secrets" / "cw_private_key").unlink()
    code, doc = await run(
        capsys, "callbacks", "status", "--config", str(rehearsal.config_path), "--json"
    )
    assert code == 2 and doc["ok"] is False and "cw_private_key" in str(doc["error"])


async def test_import_summary_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eventstore import EventStore, NewEvent

    source = tmp_path / "source.db"
    store = await EventStore.open(source)
    await store.append([NewEvent(stream="s", type="t", data={"n": i}) for i in range(3)])
    await store.close()
    args = build_parser().parse_args(
        ["export", "--db", str(source), "-o", str(tmp_path / "x.ndjson")]
    )
    assert await _sync(args.func, args) == 0
    capsys.readouterr()
    args = build_parser().parse_args(
        ["import", "--db", str(tmp_path / "copy.db"), "--json", str(tmp_path / "x.ndjson")]
    )
    assert await _sync(args.func, args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"db": str(tmp_path / "copy.db"), "imported": 3, "skipped": 0, "last_position": 3}


async def _sync(func: object, args: argparse.Namespace) -> int:
    """Run a synchronous command (it calls asyncio.run itself) off the test's event loop."""
    import asyncio

    return int(await asyncio.to_thread(func, args))  # type: ignore[arg-type]


def test_the_command_table_names_the_module_that_registers_each_command() -> None:
    from daemon.cli.main import COMMANDS

    full = {name for name, _ in _commands() if " " not in name}
    assert full == set(COMMANDS)
    for command in COMMANDS:
        alone = {name for name, _ in _commands_of(build_parser(command)) if " " not in name}
        assert command in alone, f"{COMMANDS[command]} does not register {command}"


def _commands_of(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_running_the_daemon_does_not_import_the_tools() -> None:
    """``socbridge run`` starts on its own module: restart to ready pays for no simulator,
    audit or benchmark import."""
    import subprocess
    import sys

    code = (
        "import sys, daemon.cli.main; daemon.cli.main.build_parser('run'); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('daemon.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    for tool in (
        "daemon.cli.audit",
        "daemon.cli.bench",
        "daemon.simulators.rehearsal",
        "daemon.cli.demo",
    ):
        assert tool not in loaded
