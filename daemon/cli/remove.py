"""``socbridge remove``: take the integration down (R16) and keep the event log.

It deregisters the ConnectWise ticket callback and the SOC webhook, and
appends ``admin.integration.removed`` to the log. A running daemon folds that
event and stops syncing: it decides nothing more and delivers nothing more.
Nothing is deleted from the log; ``socbridge events``, ``verify`` and
``export`` keep working on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_STORE, EXIT_USAGE
from daemon.connectors.connectwise import install as cw_install
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.errors import ConnectWiseError
from daemon.connectors.contract import RemoteError
from daemon.connectors.soc import install as soc_install
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.errors import SocError
from daemon.service.config import Config, ConfigError, load_config
from daemon.service.secrets import SecretError, load_secret
from eventstore import EventStore, NewEvent, StoreError
from projections import kinds


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "remove",
        help="deregister the callback and webhook and stop syncing; keep the event log",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Remove the integration (R16): delete socbridge's ConnectWise ticket callback and\n"
            "SOC webhook, and record the removal in the event log so a running daemon stops\n"
            "syncing. The event log is kept.\n\n"
            "exit codes: 0 removed, 1 a remote refused, 2 configuration error, 3 log unusable"
        ),
        epilog=(
            "examples:\n"
            "  socbridge remove --config /etc/socbridge/socbridge.toml\n"
            "  socbridge remove --config /etc/socbridge/socbridge.toml --json"
        ),
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print what was done as one JSON object")
    p.set_defaults(func=cmd_remove)


async def remove_integration(config: Config) -> dict[str, Any]:
    """Deregister both hooks and record the removal; return what was done."""
    async with aiohttp.ClientSession() as session:
        cw = await ConnectWiseClient.connect(
            config.connectwise, config.connectwise.load_keys(), session
        )
        soc = SocClient.from_settings(
            config.soc, load_secret(config.soc.api_token), session=session
        )
        try:
            cw_state = await cw_install.remove(cw, config.connectwise)
            soc_state = await soc_install.remove(soc, config.soc)
        finally:
            await cw.close()
            await soc.close()
    done = {"connectwise": cw_state.describe(), "soc_webhook": soc_state.action}
    store = await EventStore.open(config.store.path, synchronous=config.store.synchronous)
    try:
        await store.append(
            [
                NewEvent(
                    stream="admin",
                    type=kinds.INTEGRATION_REMOVED,
                    data=done,
                    source="socbridge.cli",
                )
            ]
        )
    finally:
        await store.close()
    return done


async def cmd_remove(args: argparse.Namespace) -> int:
    def failed(code: int, message: str) -> int:
        if args.json:
            print(orjson.dumps({"removed": False, "error": message}).decode())
        else:
            print(f"socbridge remove: {message}", file=sys.stderr)
        return code

    try:
        config = load_config(args.config)
        done = await remove_integration(config)
    except (ConfigError, SecretError) as exc:
        return failed(EXIT_USAGE, str(exc))
    except StoreError as exc:
        return failed(EXIT_STORE, str(exc))
    except (ConnectWiseError, SocError, RemoteError) as exc:
        return failed(EXIT_PROBLEM, f"a remote refused: {exc}")
    if args.json:
        print(orjson.dumps({"removed": True, **done, "log": str(config.store.path)}).decode())
        return EXIT_OK
    print(f"ConnectWise: {done['connectwise']}")
    print(f"SOC webhook: {done['soc_webhook']}")
    print(f"syncing stopped; the event log {config.store.path} is kept")
    return EXIT_OK
