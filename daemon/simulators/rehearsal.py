"""``socbridge sim all``: both simulators, a complete daemon config for them, and a rehearsal sheet.

The ConnectWise simulator listens on ``--port``, the SOC simulator on the
next port, and the daemon the config describes on the one after. Secrets go
to files (mode 0600) in a ``secrets`` folder beside the config; the event log
goes beside it too. The sheet (``--info``) is JSON with exactly the keys an
MSP engineer needs to rehearse a configuration by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.connectors.connectwise.intake import ROUTE as CW_ROUTE
from daemon.connectors.soc.intake import ROUTE as SOC_ROUTE
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.connectwise.server import SimServer
from daemon.simulators.soc import fixture as socfx
from daemon.simulators.soc.server import SocSimulator
from daemon.simulators.trust import RehearsalTls, write_rehearsal_tls

#: ConnectWise priority each SOC priority maps to in the demo (R6).
PRIORITY_MAPPING = {
    "urgent": "Priority 1 - Emergency Response",
    "high": "Priority 2 - Quick Response",
    "normal": "Priority 3 - Normal Response",
    "low": "Priority 4 - Schedule Maintenance",
}
SOURCE = {"id": 9, "name": "SOC Platform"}
NOTE_TYPE_USED = "Discussion"
NOTE_TYPES_SENT = ["Discussion", "Resolution"]  # Internal Analysis stays in ConnectWise
TENANTS = [
    {"name": "acme", "soc_organization_id": 9001, "cw_company_id": 250, "sync_enabled": True},
    {"name": "globex", "soc_organization_id": 9002, "cw_company_id": 251, "sync_enabled": False},
]


@dataclass
class Rehearsal:
    """Running simulators and where their config and sheet were written."""

    cw: SimServer
    soc: SocSimulator
    daemon_url: str
    config_path: Path
    sheet: dict[str, Any]

    async def stop(self) -> None:
        await self.cw.stop()
        await self.soc.stop()


def _write_secret(folder: Path, name: str, value: str) -> str:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return str(path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _table(name: str, values: dict[str, Any]) -> str:
    lines = [f"[{name}]"]
    for key, value in values.items():
        if isinstance(value, dict):
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines) + "\n"
    for key, value in values.items():
        if isinstance(value, dict):
            if all(isinstance(v, str) for v in value.values()) and key == "priority_mapping":
                out += f"\n[{name}.{key}]\n" + "".join(
                    f"{k} = {_toml_value(v)}\n" for k, v in value.items()
                )
            else:
                out += "\n" + _table(f"{name}.{key}", value)
    return out


def write_config(
    path: Path,
    cw_url: str,
    soc_url: str,
    daemon_host: str,
    daemon_port: int,
    poll_s: float,
    tls: RehearsalTls | None = None,
    console_port: int | None = None,
) -> dict[str, Any]:
    """Write the daemon's config (and its secret files) for running simulators.

    With ``tls`` the daemon serves TLS with that certificate and the callback and
    webhook URLs are https; without, plain HTTP on loopback (allowed explicitly).
    With ``console_port`` the operator console listens there, on loopback.
    """
    folder = path.parent
    secrets = folder / "secrets"
    scheme = "https" if tls is not None else "http"
    daemon_url = f"{scheme}://{daemon_host}:{daemon_port}"
    server: dict[str, Any] = {
        "host": daemon_host,
        "port": daemon_port,
        "install_remote_hooks": True,
    }
    if tls is not None:
        server.update(tls_cert=str(tls.cert), tls_key=str(tls.key))
    else:
        server["allow_plain_http"] = True
    sections: dict[str, dict[str, Any]] = {
        "store": {"path": str(folder / "events.db")},
        "server": server,
        "connectwise": {
            "site_url": cw_url,
            "company_id": cwfx.LOGIN_COMPANY,
            "public_key": _write_secret(secrets, "cw_public_key", cwfx.API_PUBLIC_KEY),
            "private_key": _write_secret(secrets, "cw_private_key", cwfx.API_PRIVATE_KEY),
            "client_id": cwfx.CLIENT_ID,
            "api_member": cwfx.API_MEMBER,
            "board": "SOC Incidents",
            "routing_status": "Send to SOC",
            "unlinked_status": "Unlinked",
            "solved_status": "Solved",
            "unresolved_status": "Unresolved",
            "source": SOURCE["name"],
            "note_type_used": NOTE_TYPE_USED,
            "note_types_sent": NOTE_TYPES_SENT,
            "public_callback_url": daemon_url + CW_ROUTE,
            "poll_interval_seconds": poll_s,
            "priority_mapping": PRIORITY_MAPPING,
        },
        "soc": {
            "url": soc_url,
            "email": socfx.API_EMAIL,
            "api_token": _write_secret(secrets, "soc_api_token", socfx.API_TOKEN),
            "poll_interval_seconds": poll_s,
            "webhook": {
                "public_url": daemon_url + SOC_ROUTE,
                "signing_secret": str(secrets / "soc_webhook_secret"),
            },
        },
    }
    if console_port is not None:
        sections["admin"] = {"listen": f"127.0.0.1:{console_port}"}
    # Not in the config: the key pair of a technician (a member other than socbridge's API
    # member) for the ConnectWise side of 'socbridge sync-test' (its notes are not echoes).
    _write_secret(secrets, "tech_public_key", cwfx.TECH_PUBLIC_KEY)
    _write_secret(secrets, "tech_private_key", cwfx.TECH_PRIVATE_KEY)
    text = "# socbridge configuration written by 'socbridge sim all' for its simulators.\n\n"
    text += "\n".join(_table(name, values) for name, values in sections.items())
    for tenant in TENANTS:
        text += "\n[[tenants]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in tenant.items())
    path.write_text(text)
    return sections


def info_sheet(
    cw: SimServer, soc: SocSimulator, config_path: Path, daemon_url: str
) -> dict[str, Any]:
    status_ids = cwfx.STATUS_IDS
    priorities = {name: i for i, name in enumerate(PRIORITY_MAPPING.values(), start=1)}
    return {
        "connectwise": {
            "url": cw.url,
            "company_id": cwfx.LOGIN_COMPANY,
            "client_id": cwfx.CLIENT_ID,
            "public_key": cwfx.API_PUBLIC_KEY,
            "private_key": cwfx.API_PRIVATE_KEY,
            "board": {"id": cwfx.BOARD_ID, "name": "SOC Incidents"},
            "statuses": {
                key: {"id": status_ids[name], "name": name}
                for key, name in (
                    ("new", "New"),
                    ("routing", "Send to SOC"),
                    ("unlinked", "Unlinked"),
                    ("solved", "Solved"),
                    ("unresolved", "Unresolved"),
                )
            },
            "priorities": {
                soc: {"id": priorities[name], "name": name}
                for soc, name in PRIORITY_MAPPING.items()
            },
            "source": dict(SOURCE),
            "note_type_used_by_soc": NOTE_TYPE_USED,
            "note_types_sent_to_soc": list(NOTE_TYPES_SENT),
        },
        "soc": {"url": soc.url, "email": socfx.API_EMAIL, "token": socfx.API_TOKEN},
        "tenants": [
            {
                "soc_organization_id": t["soc_organization_id"],
                "cw_company_id": t["cw_company_id"],
                "sync_enabled": t["sync_enabled"],
            }
            for t in TENANTS
        ],
        "daemon": {
            "url": daemon_url,
            "config": str(config_path),
            "connectwise_callback_url": daemon_url + CW_ROUTE,
            "soc_webhook_url": daemon_url + SOC_ROUTE,
            "health_url": daemon_url + "/healthz",
        },
    }


#: The console listens on the first port plus this (8790 for ``sim all``'s default 8700).
CONSOLE_OFFSET = 90


async def start_rehearsal(
    host: str,
    port: int,
    config_path: Path,
    info_path: Path | None,
    *,
    poll_s: float = 5.0,
    export_lag: float = 60.0,
    tls: bool = False,
    console_port: int | None = None,
) -> Rehearsal:
    """Start both simulators on ``port`` and ``port + 1``; write config and sheet.

    ``export_lag`` is how long the SOC simulator's incremental export holds
    back recent changes (the real export excludes the last minute). With
    ``tls`` the daemon serves TLS with a generated certificate the simulators trust.
    """
    config_path = config_path.resolve()
    rehearsal_tls = write_rehearsal_tls(config_path.parent / "tls", host) if tls else None
    cw = await SimServer(host, port).start()
    soc = SocSimulator(host=host, port=port + 1 if port else 0, export_lag=export_lag)
    await soc.start()
    daemon_port = port + 2 if port else _free_port(host)
    # The console's default port (8790) beside the default first port (8700).
    if console_port is None:
        console_port = port + CONSOLE_OFFSET if port else _free_port("127.0.0.1")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_config(
        config_path, cw.url, soc.url, host, daemon_port, poll_s, rehearsal_tls, console_port
    )
    daemon_url = f"{'https' if tls else 'http'}://{host}:{daemon_port}"
    sheet = info_sheet(cw, soc, config_path, daemon_url)
    sheet["daemon"]["console_url"] = f"http://127.0.0.1:{console_port}/"
    if info_path is not None:
        info_path.write_text(json.dumps(sheet, indent=2) + "\n")
    return Rehearsal(cw, soc, daemon_url, config_path, sheet)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def register_all(sim_sub: Any) -> None:
    p = sim_sub.add_parser(
        "all",
        help="run both simulators and write a daemon config and rehearsal sheet for them",
        description=(
            "Serve the ConnectWise simulator on PORT and the SOC simulator on PORT+1, write a "
            "complete daemon config (daemon on PORT+2) and a JSON rehearsal sheet. Runs until\n"
            "SIGINT/SIGTERM.\n\n"
            "exit codes: 0 stopped by a signal, 2 bad option, a port is taken or a file\n"
            "cannot be written"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n  socbridge sim all --port 8700 --write-config rehearsal/socbridge.toml "
            "--info rehearsal/sheet.json\n  socbridge run --config rehearsal/socbridge.toml\n"
            "  socbridge sim all --port 8700 --tls --write-config r/socbridge.toml --info r/s.json"
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700, help="first port (default 8700)")
    p.add_argument("--write-config", type=Path, required=True, metavar="FILE")
    p.add_argument("--info", type=Path, required=True, metavar="SHEET")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="reconciliation period")
    p.add_argument(
        "--tls",
        action="store_true",
        help="the daemon serves TLS (R13) with a generated self-signed CA in <config dir>/tls",
    )
    p.set_defaults(func=cmd_sim_all)


async def cmd_sim_all(args: Any) -> int:
    try:
        rehearsal = await start_rehearsal(
            args.host, args.port, args.write_config, args.info,
            poll_s=args.poll_seconds, tls=args.tls,
        )  # fmt: skip
    except OSError as exc:
        print(f"socbridge sim all: cannot start: {exc}", file=sys.stderr)
        return 2
    print(
        f"ConnectWise simulator {rehearsal.cw.url}, SOC simulator {rehearsal.soc.url}\n"
        f"config {rehearsal.config_path}, sheet {args.info}\n"
        f"the daemon's console will be at {rehearsal.sheet['daemon']['console_url']}\n"
        f"now run: socbridge run --config {rehearsal.config_path}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await rehearsal.stop()
    return 0
