"""Every command the README shows is exercised: by a test that runs it, or by ``make demo``.

The table below names, for each command path, the file that runs it and the text that proves
it does (the argv as that file writes it). A command added to the README without a test, or a
test that stops running it, fails here.
"""

from __future__ import annotations

import argparse
import re

from daemon.cli.main import build_parser
from tests.support.paths import REPO

#: command path -> (file that runs it, evidence in that file)
EXERCISED: dict[str, tuple[str, str]] = {
    "run": ("tests/support/process.py", '"daemon", "run", "--config"'),
    "config check": ("tests/daemon/cli/test_config.py", '"config", "check", "--config"'),
    "config reference": ("tests/daemon/cli/test_config.py", '"config", "reference"'),
    "sim all": ("tests/daemon/simulators/test_rehearsal.py", '"daemon", "sim", "all", "--port"'),
    "sim connectwise": (
        "tests/daemon/simulators/connectwise/test_simulator.py",
        '"sim", "connectwise"',
    ),
    "sim soc": ("tests/daemon/connectors/soc/test_install.py", '"sim", "soc"'),
    "demo": ("Makefile", "$(BIN)/socbridge demo"),
    "validate": ("tests/daemon/cli/test_validate.py", '"validate", "--config"'),
    "callbacks install": ("tests/daemon/cli/test_validate.py", '"callbacks", "install"'),
    "callbacks remove": ("tests/daemon/cli/test_validate.py", '"callbacks", "remove"'),
    "callbacks status": ("tests/daemon/cli/test_validate.py", '"callbacks", "status"'),
    "webhooks install": ("tests/daemon/connectors/soc/test_install.py", '"webhooks", "install"'),
    "webhooks remove": ("tests/daemon/connectors/soc/test_install.py", '"webhooks", "remove"'),
    "webhooks status": ("tests/daemon/connectors/soc/test_install.py", '"webhooks", "status"'),
    "remove": ("tests/daemon/cli/test_surface.py", '"remove", "--config"'),
    "tenants list": ("tests/daemon/cli/test_tenants.py", '"tenants", "list", "--config"'),
    "tenants enable": ("tests/daemon/cli/test_tenants.py", '"tenants", "enable"'),
    "tenants disable": ("tests/daemon/cli/test_tenants.py", '"tenants", "disable", "acme"'),
    "sync-test": ("tests/daemon/operations/test_sync_test.py", '"sync-test", "--config"'),
    "verify": ("tests/daemon/cli/test_store.py", '"verify", "--db"'),
    "export": ("tests/daemon/cli/test_store.py", '"export", "--db"'),
    "import": ("tests/daemon/cli/test_store.py", '"import", "--db"'),
    "events": ("tests/daemon/cli/test_events.py", '"events"'),
    "replay": ("tests/daemon/cli/test_replay.py", '"replay"'),
    "audit": ("tests/daemon/cli/test_audit.py", '"audit"'),
    "bench": ("tests/daemon/cli/test_bench.py", '"bench",'),
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
