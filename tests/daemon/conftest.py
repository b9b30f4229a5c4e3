"""Fixtures shared by the daemon tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.simulators.harness import Bridge


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    """Both simulators and the daemon on loopback, in a temp folder."""
    async with Bridge(tmp_path) as b:
        yield b
