"""``socbridge run``: the daemon, until SIGTERM or SIGINT.

On a stop signal the listener stops accepting, the outbox finishes or hands
back its in-flight deliveries (they stay pending in the log and are retried at
the next start), the projections are checkpointed, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from daemon.app import build_app
from daemon.cli import EXIT_OK, EXIT_STORE, EXIT_USAGE
from daemon.config import ConfigError, load_config
from daemon.secrets import SecretError
from eventstore import StoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the bridge daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run socbridge: receive callbacks and webhooks, poll both sides, decide, deliver.\n"
            "exit codes: 0 stopped cleanly, 2 configuration error, 3 event log unusable"
        ),
        epilog="example:\n  socbridge run --config /etc/socbridge/socbridge.toml",
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE")
    p.set_defaults(func=cmd_run)


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        structlog.get_logger("socbridge").info("daemon.listening", host=host, port=port)
        await stop.wait()
    finally:
        await runner.cleanup()


async def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(build_app(config), config.server.host, config.server.port, stop)
    except SecretError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_STORE
    return EXIT_OK
