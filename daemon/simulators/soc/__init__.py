"""The SOC simulator: an in-memory, Zendesk-Support-API-v2-shaped ticket desk.

``SocSimulator`` (server.py) serves it; ``register_sim`` (cli.py) adds
``socbridge sim soc``. Modules: fixture (seed data), tickets and state (the
desk and its rules), errors (reference error bodies), app (HTTP routes),
webhooks (registry and signed deliveries), signing (the simulator's own
webhook signer), faults (the knobs).
"""

from daemon.simulators.soc.cli import register_sim
from daemon.simulators.soc.server import SocSimulator

__all__ = ["SocSimulator", "register_sim"]
