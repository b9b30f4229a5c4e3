"""``socbridge config check|reference``: validate a configuration offline, print the reference.

``check`` is what to run after editing the file and before ``systemctl
reload``: it validates every key (the same validation the daemon applies),
then opens each secret file the way the daemon will (mode, owner, empty),
never printing a secret. It talks to no remote; ``socbridge validate`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from daemon.service.config import Config, ConfigError, config_hash, load_config
from daemon.service.config_reference import render
from daemon.service.listener import listener_ssl
from daemon.service.secrets import SecretError, load_secret, resolve_secret_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="check a configuration file offline, or print the configuration reference",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "check: validate FILE as the daemon would (every key, R4, tenants) and open each\n"
            "secret file it names (must exist, be non-empty, and be readable by nobody but\n"
            "its owner). No remote is contacted; secrets are never printed.\n"
            "reference: print every configuration key as Markdown (docs/configuration.md).\n\n"
            "exit codes: 0 valid, 1 a secret file is missing or unsafe, 2 the file is invalid"
        ),
        epilog=(
            "examples:\n"
            "  socbridge config check --config /etc/socbridge/socbridge.toml\n"
            "  socbridge config check --config /etc/socbridge/socbridge.toml --json\n"
            "  socbridge config reference > config-reference.md"
        ),
    )
    p.add_argument("action", choices=("check", "reference"))
    p.add_argument("--config", type=Path, metavar="FILE", help="the socbridge TOML file (check)")
    p.add_argument("--json", action="store_true", help="print the check as one JSON object")
    p.set_defaults(func=cmd_config)


def _secret_refs(config: Config) -> dict[str, str]:
    return {
        "connectwise.public_key": config.connectwise.public_key,
        "connectwise.private_key": config.connectwise.private_key,
        "soc.api_token": config.soc.api_token,
        "soc.webhook.signing_secret": config.soc.webhook.signing_secret,
    }


def check(path: Path) -> tuple[int, dict[str, Any]]:
    """(exit code, report) for the configuration at ``path``; raises ConfigError."""
    config = load_config(path)
    secrets: dict[str, str] = {}
    problems: list[str] = []
    for key, ref in _secret_refs(config).items():
        try:
            load_secret(ref)
            secrets[key] = "ok"
        except SecretError as exc:
            # The signing secret is written by `webhooks install`: missing is expected before.
            if key == "soc.webhook.signing_secret" and not resolve_secret_path(ref).exists():
                secrets[key] = "not yet written (run: socbridge webhooks install)"
                continue
            secrets[key] = "problem"
            problems.append(f"{key}: {exc}")
    tls = "none (plain HTTP)"
    if config.server.tls_cert is not None:
        # The same load `run` does at start: files present, readable, a matching pair.
        try:
            listener_ssl(config.server)
            tls = "ok"
        except ConfigError as exc:
            tls = "problem"
            problems.append(str(exc))
    report = {
        "config": str(path),
        "valid": not problems,
        "hash": config_hash(config),
        "store": str(config.store.path),
        "listen": f"{config.server.host}:{config.server.port}",
        "tls": config.server.tls_cert is not None,
        "tls_files": tls,
        "tenants": [{"name": t.name, "sync_enabled": t.sync_enabled} for t in config.tenants],
        "secrets": secrets,
        "problems": problems,
    }
    return (EXIT_PROBLEM if problems else EXIT_OK), report


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "reference":
        sys.stdout.write(render())
        return EXIT_OK
    if args.config is None:
        print("socbridge config check: --config FILE is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        code, report = check(args.config)
    except ConfigError as exc:
        if args.json:
            print(
                orjson.dumps(
                    {"config": str(args.config), "valid": False, "error": str(exc)}
                ).decode()
            )
        else:
            print(f"socbridge config check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(orjson.dumps(report).decode())
        return code
    tenants = ", ".join(
        f"{t['name']} ({'on' if t['sync_enabled'] else 'off'})" for t in report["tenants"]
    )
    print(f"configuration {report['config']}: {'valid' if code == EXIT_OK else 'NOT usable'}")
    print(f"  hash     {report['hash']}")
    print(f"  store    {report['store']}")
    print(f"  listen   {report['listen']} ({'TLS' if report['tls'] else 'plain HTTP, loopback'})")
    print(f"  tenants  {tenants}")
    if report["tls"]:
        print(f"  tls      {report['tls_files']}")
    for key, state in report["secrets"].items():
        print(f"  secret   {key}: {state}")
    for problem in report["problems"]:
        print(f"  problem  {problem}")
    return code
