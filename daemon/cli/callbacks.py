"""ConnectWise subcommands: ``socbridge callbacks install|remove|status`` and
``socbridge validate``.

Both read ``--config FILE`` (the ``[connectwise]`` section) and exit 0 when all
is well, 1 when a check failed or ConnectWise refused, 2 for a usage or
configuration error; ``--json`` prints one JSON object instead of text. Output
never contains keys (R15).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any, TextIO

import aiohttp
import orjson

from daemon.connectors.connectwise import install as callbacks
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.errors import ConnectWiseConfigError, ConnectWiseError
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.connectwise.validate import run_checks
from daemon.connectors.contract import RemoteError
from daemon.service.secrets import SecretError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``callbacks`` and ``validate`` to the ``socbridge`` subcommands."""
    cb = sub.add_parser(
        "callbacks",
        help="install, remove or show the ConnectWise ticket callback",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Register (idempotently) the ConnectWise ticket callback for the integration\n"
            "board, pointing at connectwise.public_callback_url; or remove it; or show it.\n\n"
            "exit codes: 0 done (status: installed and current), 1 ConnectWise refused or\n"
            "(status) the callback is missing or stale, 2 configuration error"
        ),
        epilog=(
            "examples:\n"
            "  socbridge callbacks install --config /etc/socbridge/socbridge.toml\n"
            "  socbridge callbacks status --config /etc/socbridge/socbridge.toml --json"
        ),
    )
    cb.add_argument("action", choices=("install", "remove", "status"))
    cb.add_argument("--config", required=True, metavar="FILE", help="socbridge TOML config")
    cb.add_argument("--json", action="store_true", help="print the result as one JSON object")
    cb.set_defaults(func=callbacks_command)
    va = sub.add_parser(
        "validate",
        help="check the ConnectWise connection, permissions, board, statuses, priorities",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Validate the ConnectWise side as the vendor guide's 'Validate Connections' does\n"
            "(R10); prints a pass/fail checklist with the fix for each failure.\n\n"
            "exit codes: 0 all checks passed, 1 a check failed, 2 configuration error"
        ),
        epilog=(
            "examples:\n"
            "  socbridge validate --config /etc/socbridge/socbridge.toml\n"
            "  socbridge validate --config /etc/socbridge/socbridge.toml --json"
        ),
    )
    va.add_argument("--config", required=True, metavar="FILE", help="socbridge TOML config")
    va.add_argument("--json", action="store_true", help="print the checklist as one JSON object")
    va.set_defaults(func=validate_command)


def load_settings(path: str) -> ConnectWiseSettings:
    from daemon.service.config import ConfigError, load_config

    # Config requires [connectwise]: a file without it is a ConfigError naming the key.
    try:
        return load_config(path).connectwise
    except ConfigError as exc:
        raise ConnectWiseConfigError(str(exc)) from None


def _json(doc: dict[str, Any], out: TextIO) -> None:
    print(orjson.dumps(doc).decode(), file=out)


async def run_callbacks(
    settings: ConnectWiseSettings, action: str, out: TextIO, as_json: bool = False
) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            client = await ConnectWiseClient.connect(settings, settings.load_keys(), session)
            fn = {"install": callbacks.install, "remove": callbacks.remove,
                  "status": callbacks.status}[action]  # fmt: skip
            state = await fn(client, settings)
        except (ConnectWiseConfigError, SecretError) as exc:
            if as_json:
                _json({"action": action, "ok": False, "error": str(exc)}, out)
            else:
                print(f"socbridge callbacks {action}: {exc}", file=out)
            return EXIT_USAGE
        except (ConnectWiseError, RemoteError) as exc:
            if as_json:
                _json({"action": action, "ok": False, "error": str(exc)}, out)
            else:
                print(f"socbridge callbacks {action}: {exc}", file=out)
            return EXIT_PROBLEM
    code = EXIT_PROBLEM if action == "status" and state.action != "present" else EXIT_OK
    if as_json:
        _json({"action": action, "ok": code == EXIT_OK, "state": asdict(state)}, out)
    else:
        print(state.describe(), file=out)
    return code


async def run_validate(settings: ConnectWiseSettings, out: TextIO, as_json: bool = False) -> int:
    try:
        keys = settings.load_keys()
    except SecretError as exc:
        if as_json:
            keys_check = {"name": "API keys", "ok": False, "detail": str(exc), "fix": ""}
            _json({"ok": False, "passed": 0, "failed": 1, "checks": [keys_check]}, out)
        else:
            print(f"FAIL  API keys: {exc}", file=out)
        return EXIT_PROBLEM
    async with aiohttp.ClientSession() as session:
        checks = await run_checks(settings, keys, session)
    failed = sum(1 for c in checks if not c.ok)
    if as_json:
        doc = {"ok": not failed, "passed": len(checks) - failed, "failed": failed,
               "checks": [asdict(c) for c in checks]}  # fmt: skip
        _json(doc, out)
        return EXIT_PROBLEM if failed else EXIT_OK
    for check in checks:
        print(check.render(), file=out)
    print(f"{len(checks) - failed} passed, {failed} failed", file=out)
    return EXIT_PROBLEM if failed else EXIT_OK


def _settings_or_exit(args: argparse.Namespace, command: str) -> ConnectWiseSettings | None:
    try:
        return load_settings(args.config)
    except ConnectWiseConfigError as exc:
        print(f"socbridge {command}: {exc}", file=sys.stderr)
        return None


async def callbacks_command(args: argparse.Namespace) -> int:
    settings = _settings_or_exit(args, "callbacks")
    if settings is None:
        return EXIT_USAGE
    return await run_callbacks(settings, args.action, sys.stdout, args.json)


async def validate_command(args: argparse.Namespace) -> int:
    settings = _settings_or_exit(args, "validate")
    if settings is None:
        return EXIT_USAGE
    return await run_validate(settings, sys.stdout, args.json)
