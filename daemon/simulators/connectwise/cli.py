"""``socbridge sim connectwise``: run the ConnectWise simulator in the foreground.

Fault flags mirror the ``/_sim/faults`` admin endpoint. ``--write-keys DIR``
writes the simulator's API key pair to ``DIR/cw_public_key`` and
``DIR/cw_private_key`` (mode 0600) so a rehearsal configuration can reference
them as secrets; the keys are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from daemon.simulators.connectwise import fixture
from daemon.simulators.connectwise.faults import FaultConfigError, Faults, parse_api_fault
from daemon.simulators.connectwise.server import SimServer


def register_sim(sim_sub: Any) -> None:
    """Add the ``connectwise`` parser to the ``socbridge sim`` subcommands."""
    p = sim_sub.add_parser(
        "connectwise",
        help="run the ConnectWise Manage simulator",
        description=(
            "Run an in-memory ConnectWise Manage simulator seeded with the demo fixture "
            f"(login company {fixture.LOGIN_COMPANY!r}, "
            f"board 'SOC Incidents' id {fixture.BOARD_ID}). Runs until SIGINT/SIGTERM.\n\n"
            "exit codes: 0 stopped by a signal, 2 bad option or the port is taken"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  socbridge sim connectwise --port 8701\n"
            "  socbridge sim connectwise --port 8701 --fail 429x3:2 --write-keys ./keys"
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8701, help="port (default 8701, 0 = any free)")
    p.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="STATUS[xCOUNT][:RETRY_AFTER]",
        help="answer the next COUNT API requests with STATUS (repeatable), e.g. 429x3:2",
    )
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each API call")
    p.add_argument("--drop-callbacks", type=int, default=0, help="drop the next N callbacks")
    p.add_argument("--duplicate-callbacks", type=int, default=0, help="send the next N twice")
    p.add_argument("--reorder-callbacks", type=int, default=0, help="hold back the next N")
    p.add_argument("--drop-rate", type=float, default=0.0, help="random callback drop rate 0..1")
    p.add_argument("--duplicate-rate", type=float, default=0.0, help="random duplicate rate 0..1")
    p.add_argument("--seed", type=int, default=0, help="seed for the random rates")
    p.add_argument(
        "--remove-permission",
        action="append",
        default=[],
        metavar="MODULE/FUNCTION",
        help="remove a permission from the API member's role, e.g. 'Service Desk/Service Tickets'",
    )
    p.add_argument("--write-keys", type=Path, metavar="DIR", help="write the API key pair here")
    p.set_defaults(func=run_sim)


def build_faults(args: argparse.Namespace) -> Faults:
    faults = Faults()
    faults.update(
        {
            "latency": args.latency,
            "drop_callbacks": args.drop_callbacks,
            "duplicate_callbacks": args.duplicate_callbacks,
            "reorder_callbacks": args.reorder_callbacks,
            "drop_rate": args.drop_rate,
            "duplicate_rate": args.duplicate_rate,
            "seed": args.seed,
        }
    )
    faults.api.extend(parse_api_fault(spec) for spec in args.fail)
    return faults


def write_keys(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in (
        ("cw_public_key", fixture.API_PUBLIC_KEY),
        ("cw_private_key", fixture.API_PRIVATE_KEY),
    ):
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        path.chmod(0o600)


async def run_sim(args: argparse.Namespace) -> int:
    try:
        faults = build_faults(args)
    except FaultConfigError as exc:
        print(f"socbridge sim connectwise: {exc}")
        return 2
    server = SimServer(args.host, args.port, faults=faults)
    role = server.state.roles[server.state.members[fixture.API_MEMBER_ID].role_id]
    for spec in args.remove_permission:
        module, _, function = spec.partition("/")
        if (module.strip(), function.strip()) not in role.permissions:
            print(f"socbridge sim connectwise: no permission {spec!r} in role {role.name!r}")
            return 2
        del role.permissions[(module.strip(), function.strip())]
    if args.write_keys:
        write_keys(args.write_keys)
    async with server:
        print(
            f"ConnectWise simulator at {server.url} (company {fixture.LOGIN_COMPANY}, "
            f"clientId {fixture.CLIENT_ID}, API member {fixture.API_MEMBER}); Ctrl-C stops it",
            flush=True,
        )
        await asyncio.Event().wait()
    return 0
