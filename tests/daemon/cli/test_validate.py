"""``socbridge validate`` and ``socbridge callbacks`` as an operator runs them,
reading a real TOML configuration (written by ``socbridge sim all``'s generator)
against the ConnectWise simulator: once as a subprocess through the entry
point, otherwise through the real argparse parser and command functions."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from daemon.cli.main import build_parser
from daemon.simulators.connectwise import SimServer, fixture


async def socbridge(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(list(argv))
    code = await args.func(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def config(sim: SimServer, tmp_path: Path) -> str:
    from daemon.simulators.rehearsal import write_config

    path = tmp_path / "socbridge.toml"
    write_config(path, sim.url, "http://127.0.0.1:9", "127.0.0.1", 8443, 60)
    return str(path)


async def test_validate_through_the_entry_point(config: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "validate", "--config", config,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert b"PASS  permission Service Desk / Service Tickets" in out and b"FAIL" not in out


async def test_validate_and_callbacks_commands(
    sim: SimServer, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table_setup = sim.state.roles[31].permissions.pop(("System", "Table Setup"))
    code, out = await socbridge(capsys, "validate", "--config", config)
    assert code == 1 and "FAIL  permission System / Table Setup" in out
    code, out = await socbridge(capsys, "callbacks", "install", "--config", config)
    assert code == 1 and "403" in out and "Table Setup" in out
    sim.state.roles[31].permissions[("System", "Table Setup")] = table_setup

    assert (await socbridge(capsys, "callbacks", "status", "--config", config))[0] == 1
    code, out = await socbridge(capsys, "callbacks", "install", "--config", config)
    assert code == 0 and "installed" in out, out
    assert (await socbridge(capsys, "callbacks", "status", "--config", config))[0] == 0
    code, out = await socbridge(capsys, "callbacks", "remove", "--config", config)
    assert code == 0 and "removed" in out and sim.state.callbacks == {}
    assert fixture.API_PRIVATE_KEY not in out


async def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = await socbridge(capsys, "validate", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "does not exist" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[connectwise]\nsite_url = "ftp://nowhere"\n')
    code, out = await socbridge(capsys, "callbacks", "install", "--config", str(bad))
    assert code == 2 and "connectwise.site_url" in out
