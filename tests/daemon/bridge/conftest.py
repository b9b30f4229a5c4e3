from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from daemon.simulators.harness import Bridge


@pytest.fixture
async def bridge(tmp_path) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with Bridge(tmp_path) as b:
        yield b
