"""The event store's typed errors, shaped after PEP 249 so callers catch what they mean.

``IntegrityError`` covers what the caller got wrong about the log's content
(a stale expected version, an event id reused with another body);
``OperationalError`` covers what is wrong with the database file or its
surroundings (locked, read-only, corrupt, newer schema). Every message says
what happened, to what, and what to do.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreError(Exception):
    """Base of every error the event store raises."""


class InvalidEventError(StoreError, ValueError):
    """An event given to ``append`` is malformed (empty stream, bad id, data not JSON)."""


class StoreClosedError(StoreError):
    """The store was closed; nothing more can be appended or read through it."""


class IntegrityError(StoreError):
    """The append conflicts with what the log already holds."""


class ConcurrencyError(IntegrityError):
    """The stream is not at the version the caller expected (optimistic concurrency)."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r} is at version {actual}, not the expected {expected}: "
            "someone appended first; re-read the stream and decide again"
        )


class LogMovedError(IntegrityError):
    """The log does not end at the position the caller expected: someone appended first."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the log ends at position {actual}, not the expected {expected}: "
            "someone appended first; read what was appended and decide again"
        )


class DuplicateEventError(IntegrityError):
    """An event id that is already in the log was appended with a different body."""

    def __init__(self, event_id: str, position: int | None, detail: str) -> None:
        self.event_id = event_id
        self.position = position
        at = f" at position {position}" if position is not None else ""
        super().__init__(f"event id {event_id} is already recorded{at} {detail}")


class ImportError_(IntegrityError):
    """An NDJSON import was refused; nothing was written."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"import refused at line {line}: {reason}; nothing was written")


class OperationalError(StoreError):
    """The database file cannot be used as it is."""


class DatabaseLockedError(OperationalError):
    """Another connection holds the write lock for longer than the busy timeout."""


class DatabaseReadOnlyError(OperationalError):
    """The database file (or its folder) cannot be written by this user."""


class DatabaseCorruptError(OperationalError):
    """The file is not a SQLite database, or its pages are damaged."""


class SchemaTooNewError(OperationalError):
    """The database was written by a newer socbridge with a schema this one does not know."""


class DatabaseUnavailableError(OperationalError):
    """The database file cannot be opened or written (missing folder, disk full, I/O error)."""


# SQLite primary result codes (the low byte of the extended code).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


def translate(exc: sqlite3.Error, path: Path | str) -> StoreError:
    """Turn a sqlite3 error into the store error that says what to do about it."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
        return DatabaseLockedError(
            f"event log {path} is locked by another process (is another socbridge running "
            "against it?); stop the other process or point this one at its own file"
        )
    if primary == _SQLITE_READONLY or "readonly" in text:
        return DatabaseReadOnlyError(
            f"event log {path} is read-only for this user; make the file and its folder "
            "writable by the service user (its -wal and -shm files are created beside it)"
        )
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "not a database" in text:
        return DatabaseCorruptError(
            f"event log {path} is not a valid SQLite database or is damaged; restore it from "
            "a backup or an NDJSON export ('socbridge import'), and keep the damaged file for "
            "inspection"
        )
    if primary == _SQLITE_FULL:
        return DatabaseUnavailableError(f"event log {path}: the disk is full; free space")
    if primary == _SQLITE_CANTOPEN or "unable to open" in text:
        return DatabaseUnavailableError(
            f"event log {path} cannot be opened; check that its folder exists and is "
            "writable by the service user"
        )
    if primary == _SQLITE_IOERR:
        return DatabaseUnavailableError(f"event log {path}: I/O error ({text}); check the disk")
    return OperationalError(f"event log {path}: {text}")
