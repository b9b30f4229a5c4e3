"""``socbridge run``: the daemon, until SIGTERM or SIGINT.

On a stop signal the listener stops accepting, the outbox finishes or hands
back its in-flight deliveries (they stay pending in the log and are retried at
the next start), the projections are checkpointed, and the process exits 0. On SIGHUP
(``systemctl reload``) the configuration file is re-read and applied without
a restart, or refused whole with the reason logged (:mod:`daemon.service.reload`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from daemon.cli.main import EXIT_OK, EXIT_STORE, EXIT_USAGE
from daemon.console.auth import Tokens
from daemon.service.app import CONFIG, CONSOLE_SOCKET, RUNNING, build_app
from daemon.service.config import Config, ConfigError, ServerSettings, load_config
from daemon.service.listener import (
    AcceptErrorThrottle,
    PortTakenError,
    bind_console,
    bind_listeners,
    start_bound,
)
from daemon.service.logs import Redactor, config_secret_refs, configure_logging
from daemon.service.reload import Reloader
from daemon.service.sdnotify import Notifier
from daemon.service.secrets import SecretError
from eventstore import StoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the bridge daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run socbridge: receive callbacks and webhooks, poll both sides, decide, deliver.\n"
            "SIGTERM/SIGINT stop it cleanly; SIGHUP re-reads --config and applies it live\n"
            "(tenants, sync rules, conflict policy, allowlists) or refuses it whole, logging\n"
            "why (invalid, or a key that needs a restart); the running config then stays.\n\n"
            "A desk that is down at start does not stop it: it serves, records what arrives,\n"
            "reports why on /readyz, and syncs once the desk answers.\n\n"
            "At start the log's chain is checked from its last anchor (see socbridge verify);\n"
            "a log edited since is refused with the position, unless --accept-broken-chain.\n\n"
            "exit codes: 0 stopped cleanly, 2 configuration, secret or taken port,\n"
            "3 event log unusable (locked, corrupt, or failing its chain check)"
        ),
        epilog=(
            "examples:\n"
            "  socbridge run --config /etc/socbridge/socbridge.toml\n"
            "  systemctl reload socbridge     # or: kill -HUP <pid>"
        ),
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--accept-broken-chain",
        action="store_true",
        help="start on an event log that fails its check at start (records "
        "admin.chain.accepted); first run socbridge verify, and prefer restoring a backup",
    )
    p.set_defaults(func=cmd_run)


async def serve(
    app: web.Application, server: ServerSettings, stop: asyncio.Event, notifier: Notifier
) -> None:
    """Serve until ``stop``; tell systemd READY once intake, sync and outbox run."""
    log = structlog.get_logger("socbridge")
    # Bound first: a taken port is refused before the log is opened or anything appended.
    listeners = bind_listeners(server)
    admin = app[CONFIG].admin
    try:
        if admin is not None:
            app[CONSOLE_SOCKET] = bind_console(admin)
    except BaseException:
        for sock, _ in listeners:
            sock.close()
        raise
    asyncio.get_running_loop().set_exception_handler(AcceptErrorThrottle())
    # aiohttp's keep-alive timer runs from the connection's first byte: a connection that
    # sends no complete request head in time (idle, or slow on purpose) is closed.
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, keepalive_timeout=server.header_timeout_seconds
    )
    watchdog = asyncio.create_task(notifier.watchdog_pings(), name="watchdog")
    try:
        await runner.setup()
        await start_bound(runner, listeners, server.max_connections)
        await app[RUNNING].wait()
        log.info("daemon.listening", host=server.host, port=server.port, tls=bool(server.tls_cert))
        notifier.notify(READY=1, STATUS="serving")
        await stop.wait()
        notifier.notify(STOPPING=1, STATUS="stopping")
        log.info("daemon.stopping", deadline_s=server.stop_deadline_seconds)
    finally:
        try:
            # Stops accepting first, then the outbox finishes its in-flight
            # deliveries and sync decides what the log holds (app._sync_ctx); what
            # is still running at the deadline is handed back (its command stays
            # pending in the log and is retried at start).
            await asyncio.wait_for(runner.cleanup(), timeout=server.stop_deadline_seconds)
        except TimeoutError:
            log.warning("daemon.stop_deadline", handed_back="in-flight deliveries")
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
        for sock, _ in listeners:
            sock.close()  # unused when the start failed before serving; closed once anyway
        if CONSOLE_SOCKET in app:
            app[CONSOLE_SOCKET].close()


async def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    redactor = Redactor()
    redactor.add_refs(config_secret_refs(config))
    if config.admin is not None and config.admin.token is not None:
        with contextlib.suppress(SecretError):  # refused at start, with its reason
            for token in Tokens.load(config.admin.token).by_name.values():
                redactor.add(token)
    configure_logging(redactor)
    app = build_app(
        config, Path(args.config).resolve(), accept_broken_chain=args.accept_broken_chain
    )
    app.on_startup.append(lambda _app: _refresh_redactor(redactor, config))
    notifier = Notifier()
    # The unit's ExecReload sends SIGHUP: re-read and apply the file (or refuse it).
    reloader = Reloader(app, notifier)
    stop = asyncio.Event()

    def stop_requested() -> None:
        reloader.close()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    try:
        await serve(app, config.server, stop, notifier)
    except PortTakenError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SecretError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"socbridge: error: {exc}", file=sys.stderr)
        return EXIT_STORE
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        reloader.close()
        await reloader.wait()
    return EXIT_OK


async def _refresh_redactor(redactor: Redactor, config: Config) -> None:
    # The webhook signing secret may be written by the hooks install at start.
    redactor.add_refs(config_secret_refs(config))
