"""Every command the README shows is exercised: by a test that runs it, or by ``make demo``.

The table below names, for each command path, the file that runs it and the text that proves
it does (the argv as that file writes it). A command added to the README without a test, or a
test that stops running it, fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from daemon.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]

#: command path -> (file that runs it, evidence in that file)
EXERCISED: dict[str, tuple[str, str]] = {
    "run": ("tests/daemon/bridge/process.py", '"daemon", "run", "--config"'),
    "config check": ("tests/daemon/test_config_cli.py", '"config", "check", "--config"'),
    "config reference": ("tests/daemon/test_config_cli.py", '"config", "reference"'),
    "sim all": ("tests/daemon/test_rehearsal.py", '"daemon", "sim", "all", "--port"'),
    "sim connectwise": ("tests/daemon/connectwise/test_simulator.py", '"sim", "connectwise"'),
    "sim soc": ("tests/daemon/soc/test_install.py", '"sim", "soc"'),
    "demo": ("Makefile", "$(BIN)/socbridge demo"),
    "validate": ("tests/daemon/connectwise/test_cli.py", '"validate", "--config"'),
    "callbacks install": ("tests/daemon/connectwise/test_cli.py", '"callbacks", "install"'),
    "callbacks remove": ("tests/daemon/connectwise/test_cli.py", '"callbacks", "remove"'),
    "callbacks status": ("tests/daemon/connectwise/test_cli.py", '"callbacks", "status"'),
    "webhooks install": ("tests/daemon/soc/test_install.py", '"webhooks", "install"'),
    "webhooks remove": ("tests/daemon/soc/test_install.py", '"webhooks", "remove"'),
    "webhooks status": ("tests/daemon/soc/test_install.py", '"webhooks", "status"'),
    "remove": ("tests/daemon/test_cli_surface.py", '"remove", "--config"'),
    "tenants list": ("tests/daemon/ops/test_tenants.py", '"tenants", "list", "--config"'),
    "tenants enable": ("tests/daemon/ops/test_tenants.py", '"tenants", "enable"'),
    "tenants disable": ("tests/daemon/ops/test_tenants.py", '"tenants", "disable", "acme"'),
    "sync-test": ("tests/daemon/ops/test_sync_test.py", '"sync-test", "--config"'),
    "verify": ("tests/daemon/test_store_cli.py", '"verify", "--db"'),
    "export": ("tests/daemon/test_store_cli.py", '"export", "--db"'),
    "import": ("tests/daemon/test_store_cli.py", '"import", "--db"'),
    "events": ("tests/daemon/test_events_cli.py", '"events"'),
    "replay": ("tests/daemon/test_replay_cli.py", '"replay"'),
    "audit": ("tests/daemon/test_audit_cli.py", '"audit"'),
    "bench": ("tests/daemon/test_store_cli.py", '"bench",'),
}


def _subcommands() -> dict[str, set[str]]:
    """Top-level command -> its second words (sub-parsers or a positional's choices)."""
    found: dict[str, set[str]] = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, parser in action.choices.items():
                words: set[str] = set()
                for sub in parser._actions:
                    if isinstance(sub, argparse._SubParsersAction):
                        words |= set(sub.choices)
                    elif not sub.option_strings and sub.choices:
                        words |= {str(c) for c in sub.choices}
                found[name] = words
    return found


def readme_commands() -> set[str]:
    """Every ``socbridge COMMAND [SUB]`` the README shows (``a|b|c`` alternatives expanded)."""
    commands = _subcommands()
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("\\|", "|")
    paths: set[str] = set()
    for match in re.finditer(r"socbridge ([a-z][a-z-]*)(?: ([a-z|]+))?", text):
        command, rest = match.group(1), match.group(2) or ""
        if command not in commands:
            continue  # prose: "socbridge keeps ..."
        subs = [w for w in rest.split("|") if w in commands[command]]
        if commands[command] and not subs and command not in ("audit", "replay", "events"):
            subs = sorted(commands[command])  # "socbridge callbacks" names all its actions
        paths |= {f"{command} {s}" for s in subs} if subs else {command}
    return paths


def test_every_readme_command_is_run_by_a_test_or_the_demo() -> None:
    missing = sorted(readme_commands() - set(EXERCISED))
    assert not missing, f"README commands no test exercises (add them to EXERCISED): {missing}"


def test_the_named_files_really_run_those_commands() -> None:
    for command, (path, evidence) in EXERCISED.items():
        text = (REPO / path).read_text(encoding="utf-8")
        assert evidence in text, f"{path} does not run 'socbridge {command}' ({evidence!r})"


def test_the_readme_shows_every_command_there_is() -> None:
    shown = {path.split()[0] for path in readme_commands()}
    assert set(_subcommands()) - shown == set()
