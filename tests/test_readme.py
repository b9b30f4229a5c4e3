"""Every command the documentation shows is run by a named test, and every command is shown.

The table below names, for each command path, the test that runs it (``file::test``)
and the argv as that test writes it, in its own body or in a helper of its module
it calls. A command added to the docs without a test, a test renamed or deleted,
or a test that stops running the command, fails here.
"""

from __future__ import annotations

import argparse
import ast
import re

from daemon.cli.main import build_parser
from tests.support.paths import REPO

#: command path -> (the test that runs it, evidence in that test or a helper it calls)
EXERCISED: dict[str, tuple[str, str]] = {
    "run": (
        "tests/daemon/service/test_service.py::"
        "test_ready_then_sigterm_exits_0_over_tls_with_simulators_delivering",
        '"daemon", "run", "--config"',
    ),
    "config check": (
        "tests/daemon/cli/test_config.py::test_check_accepts_a_good_file_and_never_prints_a_secret",
        '"config", "check", "--config"',
    ),
    "config reference": (
        "tests/daemon/cli/test_config.py::"
        "test_reference_command_prints_the_reference_from_the_installed_entry_point",
        '"config", "reference"',
    ),
    "sim all": (
        "tests/daemon/simulators/test_rehearsal.py::test_sim_all_sheet_and_run_bring_a_bridge_up",
        '"daemon", "sim", "all", "--port"',
    ),
    "sim connectwise": (
        "tests/daemon/simulators/connectwise/test_simulator.py::"
        "test_sim_cli_serves_and_writes_private_keys",
        '"sim", "connectwise"',
    ),
    "sim soc": (
        "tests/daemon/connectors/soc/test_install.py::test_sim_soc_command_serves_the_desk",
        '"sim", "soc"',
    ),
    "demo": (
        "tests/daemon/cli/test_demo.py::test_the_demo_plays_every_step_and_keeps_its_log",
        '"daemon", "demo"',
    ),
    "validate": (
        "tests/daemon/cli/test_validate.py::test_validate_through_the_entry_point",
        '"validate", "--config"',
    ),
    "callbacks install": (
        "tests/daemon/cli/test_validate.py::test_validate_and_callbacks_commands",
        '"callbacks", "install"',
    ),
    "callbacks remove": (
        "tests/daemon/cli/test_validate.py::test_validate_and_callbacks_commands",
        '"callbacks", "remove"',
    ),
    "callbacks status": (
        "tests/daemon/cli/test_validate.py::test_validate_and_callbacks_commands",
        '"callbacks", "status"',
    ),
    "webhooks install": (
        "tests/daemon/connectors/soc/test_install.py::test_webhooks_command_runs_from_the_config_file",
        '"webhooks", "install"',
    ),
    "webhooks remove": (
        "tests/daemon/connectors/soc/test_install.py::test_webhooks_command_runs_from_the_config_file",
        '"webhooks", "remove"',
    ),
    "webhooks status": (
        "tests/daemon/connectors/soc/test_install.py::test_webhooks_command_runs_from_the_config_file",
        '"webhooks", "status"',
    ),
    "remove": (
        "tests/daemon/cli/test_surface.py::test_remote_commands_print_one_json_object",
        '"remove", "--config"',
    ),
    "backup": (
        "tests/daemon/service/test_anchors_and_backup.py::"
        "test_a_backup_under_load_restores_verifies_and_replays_the_same",
        '"backup", str(dest), "--config"',
    ),
    "retry": (
        "tests/daemon/bridge/test_parked.py::test_retry_and_skip_work_while_the_daemon_runs",
        '"retry", "--ticket"',
    ),
    "skip": (
        "tests/daemon/bridge/test_parked.py::test_retry_and_skip_work_while_the_daemon_runs",
        '"skip", first.command_id',
    ),
    "tenants list": (
        "tests/daemon/cli/test_tenants.py::"
        "test_tenants_cli_lists_switches_and_refuses_unknown_or_repeated_changes",
        '"tenants", "list", "--config"',
    ),
    "tenants enable": (
        "tests/daemon/cli/test_tenants.py::"
        "test_tenants_cli_lists_switches_and_refuses_unknown_or_repeated_changes",
        '"tenants", "enable"',
    ),
    "tenants disable": (
        "tests/daemon/cli/test_tenants.py::"
        "test_tenants_cli_lists_switches_and_refuses_unknown_or_repeated_changes",
        '"tenants", "disable", "acme"',
    ),
    "sync-test": (
        "tests/daemon/operations/test_sync_test.py::"
        "test_preflight_fails_clearly_when_the_daemon_is_not_running",
        '"sync-test", "--config"',
    ),
    "verify": (
        "tests/daemon/cli/test_store.py::test_verify_reports_an_intact_log",
        '"verify", "--db"',
    ),
    "export": (
        "tests/daemon/cli/test_store.py::test_export_then_import_round_trip",
        '"export", "--db"',
    ),
    "import": (
        "tests/daemon/cli/test_store.py::test_export_then_import_round_trip",
        '"import", "--db"',
    ),
    "events": (
        "tests/daemon/cli/test_events.py::test_bad_filters_are_refused_with_exit_2",
        '"events"',
    ),
    "replay": (
        "tests/daemon/cli/test_replay.py::test_replaying_the_same_log_twice_prints_the_same_bytes",
        '"replay"',
    ),
    "audit": (
        "tests/daemon/cli/test_audit.py::test_the_commands_work_from_a_real_config_and_print_no_secret",
        '"audit"',
    ),
    "bench": (
        "tests/daemon/cli/test_bench.py::test_bench_quick_prints_one_json_line_with_every_figure",
        '"bench",',
    ),
}


def _runs(node_id: str) -> str:
    """The source of a test and of the module's functions it calls by name (its helpers)."""
    path, name = node_id.split("::")
    source = (REPO / path).read_text(encoding="utf-8")
    functions = {
        node.name: node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    test = functions.get(name)
    assert test is not None, f"{node_id}: no such test"
    called = {
        n.func.id
        for n in ast.walk(test)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions
    }
    parts = [ast.get_source_segment(source, functions[f]) or "" for f in (name, *sorted(called))]
    return " ".join(" ".join(part.split()) for part in parts)


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


#: Where the documentation shows commands: the README, and every command in operations.md.
DOCUMENTED = ("README.md", "docs/operations.md")


def readme_commands() -> set[str]:
    """Every ``socbridge COMMAND [SUB]`` the user documentation shows (``a|b|c`` alternatives
    expanded)."""
    commands = _subcommands()
    text = " ".join((REPO / path).read_text(encoding="utf-8") for path in DOCUMENTED)
    text = text.replace("\\|", "|")
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
    assert not missing, f"documented commands no test exercises (add them to EXERCISED): {missing}"


def test_the_named_tests_really_run_those_commands() -> None:
    for command, (node_id, evidence) in EXERCISED.items():
        assert evidence in _runs(node_id), f"{node_id} does not run 'socbridge {command}'"


def test_the_readme_shows_every_command_there_is() -> None:
    shown = {path.split()[0] for path in readme_commands()}
    assert set(_subcommands()) - shown == set()
