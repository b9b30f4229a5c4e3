"""The SOC simulator, a real event log, settings and the webhook route (tests/support/soc.py)."""

from tests.support.soc import client, daemon, daemon_socket, http, settings, sim, store

__all__ = ["client", "daemon", "daemon_socket", "http", "settings", "sim", "store"]
