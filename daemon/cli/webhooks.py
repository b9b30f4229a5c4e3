"""``socbridge webhooks install|remove|status``: the SOC webhook subscription.

Each takes ``--config FILE`` and uses its ``[soc]`` section. ``install``
creates or repairs socbridge's webhook and stores the signing secret in the
configured file; ``remove`` deletes both; ``status`` reports without
changing anything; ``--json`` prints one JSON object instead of text. The
secret is never printed. Exit codes: 0 done/healthy, 1 installed but not
healthy (or the desk refused), 2 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import orjson

from daemon.connectors.contract import RemoteError
from daemon.connectors.soc import install as installer
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.errors import SocError
from daemon.connectors.soc.settings import SocSettings
from daemon.service.secrets import SecretError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "webhooks",
        help="install, remove or check the SOC desk's webhook subscription",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Manage the webhook the SOC desk uses to tell socbridge about ticket changes.\n"
            "install is idempotent and stores the signing secret in [soc.webhook]\n"
            "signing_secret (mode 0600); remove deletes the webhook and that file.\n\n"
            "exit codes: 0 done / healthy, 1 not healthy or the desk refused,\n"
            "2 configuration error"
        ),
        epilog=(
            "examples:\n"
            "  socbridge webhooks install --config /etc/socbridge/socbridge.toml\n"
            "  socbridge webhooks status --config /etc/socbridge/socbridge.toml --json"
        ),
    )
    p.add_argument("action", choices=("install", "remove", "status"))
    p.add_argument("--config", required=True, help="socbridge TOML configuration file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_webhooks)


def _settings(path: str) -> SocSettings:
    from daemon.service.config import ConfigError, load_config

    # Config requires [soc]: a file without it is a ConfigError naming the key.
    try:
        return load_config(path).soc
    except ConfigError as exc:
        raise SocError(str(exc)) from None


def _print_status(result: installer.WebhookStatus) -> None:
    print(f"webhook: {'installed' if result.installed else 'not installed'} ({result.action})")
    if result.installed:
        print(f"  id: {result.webhook_id}")
        print(f"  endpoint: {result.endpoint}")
        print(f"  active: {result.active}  subscriptions ok: {result.subscriptions_ok}")
        print(f"  signing secret stored: {result.secret_stored}  current: {result.secret_matches}")
    for problem in result.problems:
        print(f"  problem: {problem}")


def _error(action: str, exc: Exception, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps({"action": action, "ok": False, "error": str(exc)}).decode())
    else:
        print(f"socbridge webhooks {action}: {exc}", file=sys.stderr)


async def run_webhooks(action: str, settings: SocSettings, as_json: bool = False) -> int:
    """Run one action against the desk; prints a report and returns the exit code."""
    try:
        token = settings.load_token()
    except SecretError as exc:
        _error(action, exc, as_json)
        return EXIT_USAGE
    async with SocClient.from_settings(settings, token) as client:
        try:
            if action == "install":
                result = await installer.install(client, settings)
            elif action == "remove":
                result = await installer.remove(client, settings)
            else:
                result = await installer.status(client, settings)
        except (SocError, RemoteError) as exc:
            _error(action, exc, as_json)
            return EXIT_PROBLEM
    code = EXIT_OK if action == "remove" or result.healthy else EXIT_PROBLEM
    if as_json:
        doc = {"action": action, "ok": code == EXIT_OK, "healthy": result.healthy,
               "webhook": asdict(result)}  # fmt: skip
        print(orjson.dumps(doc).decode())
    else:
        _print_status(result)
    return code


async def cmd_webhooks(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args.config)
    except SocError as exc:
        _error(args.action, exc, args.json)
        return EXIT_USAGE
    return await run_webhooks(args.action, settings, args.json)
