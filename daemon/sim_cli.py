"""``socbridge sim``: run a simulator of one side (ConnectWise or the SOC desk).

Each simulator package contributes its parser through ``register_sim``.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add ``sim`` with one subcommand per simulator."""
    from daemon.connectwise.simulator import register_sim as register_connectwise
    from daemon.sim_all import register_all
    from daemon.soc.simulator import register_sim as register_soc

    parser: argparse.ArgumentParser = sub.add_parser(
        "sim",
        help="run a ConnectWise or SOC desk simulator (for tests, demos and rehearsals)",
        description="Run an in-memory simulator of one side, speaking the real API shapes.",
    )
    sim_sub = parser.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)
    register_connectwise(sim_sub)
    register_soc(sim_sub)
    register_all(sim_sub)
