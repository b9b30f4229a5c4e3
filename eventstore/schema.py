"""The event log's schema and its migrations, versioned by SQLite's ``user_version``.

Migrations only ever append to :data:`MIGRATIONS`; a database whose
``user_version`` is higher than this code knows was written by a newer
socbridge and is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

from eventstore.errors import SchemaTooNewError

_V1 = """
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    tenant         TEXT,
    ticket         TEXT,
    causation_id   TEXT,
    correlation_id TEXT,
    source         TEXT    NOT NULL,
    occurred_at    TEXT,
    recorded_at    TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    UNIQUE (stream, stream_version)
);
CREATE INDEX events_by_ticket ON events (tenant, ticket, position) WHERE ticket IS NOT NULL;
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: UPDATE of events is refused');
END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: DELETE of events is refused');
END;
"""

#: Version 2 replaces the per-event ticket index with a map from each
#: (tenant, ticket) to the streams holding its events, kept by a trigger. A
#: per-event index puts one more randomly placed B-tree leaf into every commit
#: (about one more WAL page per event for a group commit spread over many
#: streams). The map gains a row only when a ticket first appears in a stream,
#: so a steady-state append only probes it, and reading a ticket becomes a
#: seek per stream on the (stream, stream_version) index. A NULL tenant is
#: keyed as '' (the map may over-approximate; reads filter by the exact
#: tenant). Rows are never updated or deleted, like the events they index.
_V2 = """
CREATE TABLE ticket_streams (
    tenant TEXT NOT NULL,
    ticket TEXT NOT NULL,
    stream TEXT NOT NULL,
    PRIMARY KEY (tenant, ticket, stream)
) WITHOUT ROWID;
INSERT OR IGNORE INTO ticket_streams (tenant, ticket, stream)
    SELECT COALESCE(tenant, ''), ticket, stream FROM events WHERE ticket IS NOT NULL;
DROP INDEX events_by_ticket;
CREATE TRIGGER events_map_ticket AFTER INSERT ON events WHEN NEW.ticket IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO ticket_streams (tenant, ticket, stream)
        VALUES (COALESCE(NEW.tenant, ''), NEW.ticket, NEW.stream);
END;
CREATE TRIGGER ticket_streams_refuse_update BEFORE UPDATE ON ticket_streams
BEGIN
    SELECT RAISE(ABORT, 'the ticket map is append-only: UPDATE of ticket_streams is refused');
END;
CREATE TRIGGER ticket_streams_refuse_delete BEFORE DELETE ON ticket_streams
BEGIN
    SELECT RAISE(ABORT, 'the ticket map is append-only: DELETE of ticket_streams is refused');
END;
"""

#: Each entry migrates from version ``index`` to ``index + 1``.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def check_version(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version, refusing one newer than this code."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"event log {path} has schema version {version}, but this socbridge knows only up "
            f"to {SCHEMA_VERSION}; upgrade socbridge (never downgrade against a newer log)"
        )
    return version


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`, one transaction per step."""
    version = check_version(conn, path)
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated.
            version = check_version(conn, path)
            if version >= SCHEMA_VERSION:
                conn.execute("COMMIT")
                break
            for statement in _split(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version += 1


def _split(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.strip().splitlines():
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
