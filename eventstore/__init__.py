"""socbridge's event log: an append-only, hash-chained SQLite event store.

The store knows nothing of HTTP, ConnectWise or the SOC. It appends events
(idempotently, with optimistic concurrency, group-committed), reads them back
in order, follows new appends live, verifies the hash chain, and exports /
imports NDJSON.
"""

from eventstore.events import (
    NewEvent,
    RecordedEvent,
    derived_event_id,
    new_event_id,
)

__all__ = [
    "NewEvent",
    "RecordedEvent",
    "derived_event_id",
    "new_event_id",
]
