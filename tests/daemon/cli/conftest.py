"""The ConnectWise simulator for the command tests that configure against it."""

from tests.support.connectwise import sim

__all__ = ["sim"]
