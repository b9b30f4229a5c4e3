"""socbridge's event log: an append-only, hash-chained SQLite event store.

The store knows nothing of HTTP, ConnectWise or the SOC. It appends events
(idempotently, with optimistic concurrency, group-committed), reads them back
in order, follows new appends live, verifies the hash chain, and exports /
imports NDJSON.
"""

from eventstore.errors import (
    ConcurrencyError,
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DatabaseUnavailableError,
    DuplicateEventError,
    ImportError_,
    IntegrityError,
    InvalidEventError,
    LogMovedError,
    OperationalError,
    SchemaTooNewError,
    StoreClosedError,
    StoreError,
)
from eventstore.events import NewEvent, RecordedEvent, derived_event_id, new_event_id, utc_now
from eventstore.store import EventStore
from eventstore.transfer import ImportReport, export_ndjson, import_ndjson
from eventstore.verify import VerifyReport, verify

__all__ = [
    "ConcurrencyError",
    "DatabaseCorruptError",
    "DatabaseLockedError",
    "DatabaseReadOnlyError",
    "DatabaseUnavailableError",
    "DuplicateEventError",
    "EventStore",
    "ImportError_",
    "ImportReport",
    "IntegrityError",
    "InvalidEventError",
    "LogMovedError",
    "NewEvent",
    "OperationalError",
    "RecordedEvent",
    "SchemaTooNewError",
    "StoreClosedError",
    "StoreError",
    "VerifyReport",
    "derived_event_id",
    "export_ndjson",
    "import_ndjson",
    "new_event_id",
    "utc_now",
    "verify",
]
