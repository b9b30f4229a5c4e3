"""``socbridge sim``: run a simulator of one side (ConnectWise or the SOC desk).

Each simulator package contributes its parser through ``register_sim``.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add ``sim`` with one subcommand per simulator."""
    from daemon.simulators.connectwise import register_sim as register_connectwise
    from daemon.simulators.rehearsal import register_all
    from daemon.simulators.soc import register_sim as register_soc

    parser: argparse.ArgumentParser = sub.add_parser(
        "sim",
        help="run a ConnectWise or SOC desk simulator (for tests, demos and rehearsals)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run an in-memory simulator of one side (or both, with 'all'), speaking the real\n"
            "API shapes, with fault knobs. See 'socbridge sim SIMULATOR --help'.\n\n"
            "exit codes: 0 stopped by a signal, 2 bad option or a port is taken"
        ),
        epilog=(
            "examples:\n"
            "  socbridge sim all --port 8700 --write-config r/socbridge.toml --info r/sheet.json\n"
            "  socbridge sim connectwise --port 8701\n"
            "  socbridge sim soc --port 8766"
        ),
    )
    sim_sub = parser.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)
    register_connectwise(sim_sub)
    register_soc(sim_sub)
    register_all(sim_sub)
