"""A faithful, in-memory ConnectWise Manage simulator (``socbridge sim connectwise``).

See :mod:`.fixture` for the seed data, :mod:`.app` for the API surface,
:mod:`.callbacks` for signed callback delivery and :mod:`.faults` for the
failure knobs.
"""

from daemon.simulators.connectwise.cli import register_sim
from daemon.simulators.connectwise.server import SimServer

__all__ = ["SimServer", "register_sim"]
