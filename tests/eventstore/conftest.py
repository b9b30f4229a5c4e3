from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import EventStore, NewEvent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(db_path)
    yield s
    await s.close()


def ev(
    stream: str = "cw:ticket:1", type: str = "connectwise.ticket.observed", **kw: object
) -> NewEvent:
    data = kw.pop("data", {"id": 1, "status": "New"})
    return NewEvent(stream=stream, type=type, data=data, **kw)  # type: ignore[arg-type]
