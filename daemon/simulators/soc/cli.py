"""``socbridge sim soc``: run the SOC simulator until interrupted.

Serves the seeded desk (see ``fixture.py``) on ``--host``/``--port`` with the
fault knobs given as flags; they can be changed live with
``PATCH /_sim/faults``. Bind it to loopback: the admin surface has no auth.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from daemon.simulators.soc import fixture
from daemon.simulators.soc.faults import FaultSettings
from daemon.simulators.soc.server import SocSimulator


def register_sim(sim_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sim_sub.add_parser(
        "soc",
        help="run the SOC desk simulator (Zendesk Support API v2 shape)",
        description=(
            "In-memory SOC ticket desk speaking the Zendesk Support API v2 shape, with signed "
            "webhooks and fault knobs.\nCredentials: see daemon/simulators/soc/fixture.py. "
            "Runs until SIGINT/SIGTERM.\n\n"
            "exit codes: 0 stopped by a signal, 2 bad option or the port is taken"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  socbridge sim soc --port 8766\n"
            "  socbridge sim soc --port 8766 --rate-limit-ratio 0.2 --error-ratio 0.1"
        ),
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--export-lag", type=float, default=60.0, help="seconds the export holds back")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added per API request")
    p.add_argument(
        "--rate-limit-ratio", type=float, default=0.0, help="share of requests given 429"
    )
    p.add_argument("--rate-limit-per-minute", type=int, default=None, help="real request budget")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on a 429")
    p.add_argument("--error-ratio", type=float, default=0.0, help="share of requests given a 5xx")
    p.add_argument("--error-status", type=int, default=503, choices=(500, 502, 503, 504))
    p.add_argument("--drop-webhooks", type=float, default=0.0, help="share of deliveries dropped")
    p.add_argument("--duplicate-webhooks", type=float, default=0.0, help="share sent twice")
    p.add_argument("--reorder-webhooks", action="store_true", help="deliver pairs in reverse")
    p.add_argument("--seed", type=int, default=None, help="seed for the ratio knobs")
    p.set_defaults(func=cmd_sim_soc)


def faults_from_args(args: argparse.Namespace) -> FaultSettings:
    return FaultSettings(
        latency=args.latency,
        rate_limit_ratio=args.rate_limit_ratio,
        rate_limit_per_minute=args.rate_limit_per_minute,
        retry_after=args.retry_after,
        error_ratio=args.error_ratio,
        error_status=args.error_status,
        webhook_drop_ratio=args.drop_webhooks,
        webhook_duplicate_ratio=args.duplicate_webhooks,
        webhook_reorder=args.reorder_webhooks,
        seed=args.seed,
    )


async def cmd_sim_soc(args: argparse.Namespace) -> int:
    try:
        faults = faults_from_args(args)
    except ValidationError as exc:
        print(f"socbridge sim soc: invalid fault setting: {exc}", file=sys.stderr)
        return 2
    sim = SocSimulator(host=args.host, port=args.port, faults=faults, export_lag=args.export_lag)
    try:
        await sim.start()
    except OSError as exc:
        print(
            f"socbridge sim soc: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 2
    print(
        f"SOC simulator on {sim.url}/api/v2 (API user {fixture.API_EMAIL}, "
        f"account {fixture.SUBDOMAIN}); faults: PATCH {sim.url}/_sim/faults",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
    return 0
