"""The ConnectWise simulator, settings and clients (see tests/support/connectwise.py)."""

from tests.support.connectwise import cw, http, make_settings, settings, sim, tech

__all__ = ["cw", "http", "make_settings", "settings", "sim", "tech"]
