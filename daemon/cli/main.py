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
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_STORE = 3


#: Each command and the module that registers it, in help order. Running one
#: command imports only its module, so ``socbridge run`` (restart to ready) does
#: not pay for the simulators, the audit or the benchmarks; ``socbridge --help``
#: imports them all. A test checks this table against what the modules register.
COMMANDS: dict[str, str] = {
    "run": "daemon.cli.run",  # the daemon
    "config": "daemon.cli.config",  # config check, reference
    "verify": "daemon.cli.store",  # event log: verify, export, import
    "export": "daemon.cli.store",
    "import": "daemon.cli.store",
    "backup": "daemon.cli.store",
    "bench": "daemon.cli.bench",  # benchmarks
    "demo": "daemon.cli.demo",  # make demo
    "callbacks": "daemon.cli.callbacks",  # callbacks, validate (R10, R11)
    "validate": "daemon.cli.callbacks",
    "webhooks": "daemon.cli.webhooks",  # webhooks install/remove/status
    "remove": "daemon.cli.remove",  # R16
    "sim": "daemon.cli.sim",  # simulators
    "events": "daemon.cli.events",  # a ticket's timeline
    "replay": "daemon.cli.replay",  # replay, policy preview
    "audit": "daemon.cli.audit",  # audit, --remote, --fix
    "sync-test": "daemon.cli.sync_test",  # R12 sync test
    "tenants": "daemon.cli.tenants",  # tenants list|enable|disable (R9)
    "retry": "daemon.cli.parked",  # parked commands: retry, skip
    "skip": "daemon.cli.parked",
}


def _modules(command: str | None = None) -> list[ModuleType]:
    """The feature modules to register: the one for ``command``, or all of them.

    Imported here, not at module level, so a command imports only what it needs
    and a feature module's import error names itself.
    """
    names = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    return [importlib.import_module(name) for name in names]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``socbridge`` parser; with ``command``, only that command's module is loaded."""
    parser = argparse.ArgumentParser(
        prog="socbridge",
        description=(
            "Keep SOC security-incident tickets in sync with ConnectWise Manage, "
            "on an append-only SQLite event log."
        ),
        epilog="Run 'socbridge COMMAND --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _modules(command):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
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
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``socbridge events ... | head``): what it wanted, it has.
        # Point stdout at /dev/null so the interpreter's last flush does not fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return int(result) if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
