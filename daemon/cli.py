"""The ``socbridge`` command line: one entry point, one subcommand per task.

Each feature module contributes its subcommands through a ``register(sub)``
function that adds an argparse parser and sets ``func`` to a callable taking
the parsed args and returning the exit code (a coroutine function is run with
``asyncio.run``). The list below is the whole command surface, in help order.

Exit codes: 0 success, 1 the check or command found a problem (e.g. verify
found a broken chain), 2 usage or configuration error, 3 the database could
not be used (locked, read-only, corrupt, newer schema).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_STORE = 3


def _modules() -> list[ModuleType]:
    # Imported here, not at module level, so `socbridge --help` stays fast and
    # a feature module's import error names itself.
    from daemon import (
        audit_cli,  # audit, --remote, --fix
        bench_cli,  # benchmarks
        config_cli,  # config check, reference
        demo_cli,  # make demo
        events_cli,  # a ticket's timeline
        remove_cli,  # R16
        replay_cli,  # replay, policy preview
        run_cli,  # the daemon
        sim_cli,  # simulators
        store_cli,  # event log: verify, export, import
        synctest_cli,  # R12 sync test
        tenants_cli,  # tenants list|enable|disable (R9)
    )
    from daemon.connectwise import cli as connectwise_cli  # callbacks, validate
    from daemon.soc import cli as soc_cli  # webhooks install/remove/status

    return [run_cli, config_cli, store_cli, bench_cli, demo_cli, connectwise_cli, soc_cli,
            remove_cli, sim_cli, events_cli, replay_cli, audit_cli, synctest_cli,
            tenants_cli]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socbridge",
        description=(
            "Keep SOC security-incident tickets in sync with ConnectWise Manage, "
            "on an append-only SQLite event log."
        ),
        epilog="Run 'socbridge COMMAND --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], object] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if inspect.iscoroutinefunction(func):
            result = asyncio.run(func(args))
        else:
            result = func(args)
    except KeyboardInterrupt:
        return 130
    return int(result) if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
