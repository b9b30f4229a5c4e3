"""``socbridge sync-test``: the R12 round trip for one tenant, step by step.

The steps and how each is checked are in :mod:`daemon.operations.sync_test`. This module
parses the command line, refuses what cannot run (exit 2), prints one
aligned line per step as it finishes (or one JSON object per line with
``--json``) and a summary, and maps the outcome to the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TextIO

import orjson

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_STORE, EXIT_USAGE
from daemon.connectors.connectwise.settings import ApiKeys
from daemon.operations.sync_test import STEPS, Report, StepResult, SyncTest, UsageError
from daemon.service.config import ConfigError, load_config
from daemon.service.logs import Redactor, config_secret_refs, configure_logging
from daemon.service.secrets import SecretError, load_secret
from eventstore import StoreError

_TITLE_WIDTH = max(len(s.title) for s in STEPS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sync-test",
        help="R12: a real round trip for one tenant through the running daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Test one tenant's sync end to end through the running daemon (R12). With the\n"
            "configuration's own API credentials, as the SOC platform and the MSP would, it:\n"
            "  preflight                  tenant's sync on (config, or 'tenants enable/disable'),\n"
            "                             daemon ready at /readyz, both APIs answer\n"
            "  create SOC -> ConnectWise  a SOC ticket (requester = the recipient, subject\n"
            "                             'socbridge sync test RUN-ID') appears in ConnectWise\n"
            "  reply SOC -> ConnectWise   a public SOC reply appears as a ConnectWise note\n"
            "  reply ConnectWise -> SOC   a note of a type the tenant sends appears on the SOC\n"
            "  create ConnectWise -> SOC  a ticket routed to the SOC appears there\n"
            "  solve (both ways)          a solve on one side shows on the other\n"
            "Each step passes or fails with the reason and its duration; a step whose ticket\n"
            "is missing is skipped, naming the step that failed. Every step is recorded in the\n"
            "event log (admin.sync_test.*, one correlation id per run).\n\n"
            "The daemon ignores ConnectWise notes written with its own API member's keys (R8),\n"
            "so the ConnectWise -> SOC reply needs the key pair of a member who works tickets\n"
            "(--technician-public-key/--technician-private-key; those keys are also used for\n"
            "the other ConnectWise writes). Without them that step fails and says so.\n\n"
            "Cleanup: like the vendor's sync test, the test tickets stay (their subject names\n"
            "the run), but every one still open is solved on both sides at the end, also after\n"
            "a failure; --no-cleanup leaves a failed run's tickets as they are.\n\n"
            "exit codes: 0 every step passed, 1 a step failed or was skipped, 2 usage or\n"
            "configuration error (unknown tenant, bad email, unreadable secret), 3 the event\n"
            "log cannot be used, 130 interrupted (Ctrl-C; open test tickets are solved first)"
        ),
        epilog=(
            "examples:\n"
            "  # as root on the service host: credential:NAME is /etc/socbridge/credentials/NAME\n"
            "  sudo /opt/socbridge/venv/bin/socbridge sync-test \\\n"
            "      --config /etc/socbridge/socbridge.toml --tenant acme \\\n"
            "      --recipient soc-desk@msp.example \\\n"
            "      --technician-public-key credential:tech_public_key \\\n"
            "      --technician-private-key credential:tech_private_key\n"
            "  # a rehearsal: 'socbridge sim all' writes a technician's keys beside the config\n"
            "  socbridge sync-test --config rehearsal/socbridge.toml --tenant acme \\\n"
            "      --recipient soc-desk@acme.example \\\n"
            "      --technician-public-key rehearsal/secrets/tech_public_key \\\n"
            "      --technician-private-key rehearsal/secrets/tech_private_key\n"
            "  # only the failed steps, as JSON\n"
            "  socbridge sync-test --config socbridge.toml --tenant acme "
            "--recipient soc-desk@msp.example --json | jq -c 'select(.status == \"failed\")'\n"
            "  # what the runs recorded\n"
            "  socbridge events --config socbridge.toml --type admin.sync_test"
        ),
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE")
    p.add_argument("--tenant", required=True, metavar="T", help="the tenant's name in the config")
    p.add_argument(
        "--recipient",
        required=True,
        metavar="EMAIL",
        help="requester of the SOC test ticket and contact of the ConnectWise one",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help=(
            "how long each step waits for the other side (default 120); keep it above the "
            "daemon's poll_interval_seconds, the fallback for a missed callback or webhook"
        ),
    )
    p.add_argument(
        "--poll",
        type=float,
        default=2.0,
        metavar="S",
        help="how often a waiting step re-reads the remote API when the log is quiet (default 2)",
    )
    p.add_argument(
        "--technician-public-key",
        metavar="REF",
        help="public key of a ConnectWise member who works tickets: a file, or credential:NAME",
    )
    p.add_argument(
        "--technician-private-key", metavar="REF", help="that member's private key (REF as above)"
    )
    p.add_argument(
        "--no-cleanup", action="store_true", help="do not solve the test tickets left open"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per step, then a summary")
    p.set_defaults(func=cmd_sync_test)


def _usage(err: TextIO, message: str) -> int:
    err.write(f"socbridge sync-test: {message}\n")
    return EXIT_USAGE


def _line(result: StepResult) -> str:
    return (
        f"  {result.title:<{_TITLE_WIDTH}}  {result.status.upper():<7}  "
        f"{result.duration_s:>6.1f}s  {result.reason}"
    )


def _summary(report: Report) -> list[str]:
    lines = [f"  cleanup: {note}" for note in report.cleanup]
    verdict = "passed" if report.ok else "INTERRUPTED" if report.interrupted else "FAILED"
    lines.append(
        f"sync test {verdict}: {report.count('passed')} passed, {report.count('failed')} failed, "
        f"{report.count('skipped')} skipped in {report.duration_s:.1f}s (run {report.run_id})"
    )
    t = report.tickets
    soc = ", ".join(str(t[k]) for k in ("soc_a", "soc_b") if k in t)
    cw = ", ".join(str(t[k]) for k in ("cw_a", "cw_b") if k in t)
    if soc or cw:
        lines.append(f"test tickets kept for the record: SOC {soc or '-'}; ConnectWise {cw or '-'}")
    return lines


async def cmd_sync_test(args: argparse.Namespace) -> int:
    return await sync_test_command(args, sys.stdout, sys.stderr, configure_logs=True)


async def sync_test_command(
    args: argparse.Namespace, out: TextIO, err: TextIO, *, configure_logs: bool = False
) -> int:
    """The command on parsed ``args``, printing to ``out`` and ``err``; the exit code.

    With ``configure_logs`` (the real command, not a test in a shared process) the
    clients' warnings (retries) go to ``err`` as JSON lines, secrets scrubbed, so
    ``out`` holds only the report."""

    def emit(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    if args.timeout <= 0 or args.poll <= 0:
        return _usage(err, "--timeout and --poll must be positive")
    if (args.technician_public_key is None) != (args.technician_private_key is None):
        return _usage(
            err, "give both --technician-public-key and --technician-private-key, or neither"
        )
    try:
        config = load_config(args.config)
        # Every secret is read up front: an unreadable one is a configuration error.
        config.connectwise.load_keys()
        load_secret(config.soc.api_token)
        technician = None
        if args.technician_public_key is not None:
            technician = ApiKeys(
                load_secret(args.technician_public_key), load_secret(args.technician_private_key)
            )
        test = SyncTest(
            config,
            args.tenant,
            args.recipient,
            timeout_s=args.timeout,
            poll_s=args.poll,
            technician=technician,
            cleanup=not args.no_cleanup,
        )
    except (ConfigError, SecretError, UsageError) as exc:
        return _usage(err, str(exc))
    if configure_logs:
        redactor = Redactor()
        redactor.add_refs(config_secret_refs(config))
        if technician is not None:
            redactor.add(technician.public_key)
            redactor.add(technician.private_key)
        configure_logging(redactor, err, logging.WARNING)

    def show(report: Report) -> None:
        if args.json:
            emit(orjson.dumps(report.to_json()).decode())
        else:
            for line in _summary(report):
                emit(line)

    tenant = test.tenant
    if args.json:
        test.on_step = lambda r: emit(orjson.dumps(r.to_json(test.run_id, tenant.name)).decode())
    else:
        test.on_step = lambda r: emit(_line(r))
        emit(
            f"sync test {test.run_id}: tenant {tenant.name} (SOC organization "
            f"{tenant.soc_organization_id}, ConnectWise company {tenant.cw_company_id}), "
            f"recipient {args.recipient}, up to {args.timeout:g}s per step"
        )
    try:
        report = await test.run()
    except StoreError as exc:
        err.write(f"socbridge sync-test: {exc}\n")
        return EXIT_STORE
    except asyncio.CancelledError:
        show(test.report)  # interrupted: say what ran and what was solved, then stop
        raise
    show(report)
    return EXIT_OK if report.ok else EXIT_PROBLEM
