"""A plain observation event for the event-store tests."""

from __future__ import annotations

from eventstore import NewEvent


def ev(
    stream: str = "cw:ticket:1", type: str = "connectwise.ticket.observed", **kw: object
) -> NewEvent:
    data = kw.pop("data", {"id": 1, "status": "New"})
    return NewEvent(stream=stream, type=type, data=data, **kw)  # type: ignore[arg-type]
