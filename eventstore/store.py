"""The event store: one SQLite file, one writer, group-committed appends, ordered reads.

All writes go through a single writer thread that owns the write connection.
``append`` validates its events in the caller's task, puts a request on the
writer's queue and awaits its future; the writer thread drains every queued
request into one group (a refused request writes nothing and does not take its
neighbours down), commits it once, and only then hands the results back
to the event loop in one call: a caller returns when its events are durable,
and many concurrent callers share one fsync. The writer is a plain thread fed
by a thread-safe queue rather than a task driving an executor, so an append
costs one wake-up each way and no extra event-loop round trips. Reads use a
second connection on a reader thread, so WAL lets them run while the writer
commits.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from bisect import bisect_left
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from eventstore.chain import GENESIS_HASH
from eventstore.errors import (
    DatabaseUnavailableError,
    InvalidEventError,
    StoreClosedError,
    StoreError,
    translate,
)
from eventstore.events import NewEvent, RecordedEvent
from eventstore.schema import check_version, migrate
from eventstore.writer import (
    PACKED,
    PACKED_BATCH,
    Outcome,
    Prepared,
    Tip,
    head,
    packed_batch_to_events,
    packed_to_events,
    prepare,
    row_to_event,
    write_group,
    write_group_at_tip,
)

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

#: How many append requests one transaction takes at most.
MAX_GROUP = 1024
#: A group at least this large that the writer had to wait for is written as two
#: groups, one after the other. With every appender waiting on one commit, they
#: all resume together and the writer idles while they prepare their next
#: appends; split, half of them prepare theirs while the other half commits,
#: and the two halves go on alternating (the writer then never waits, so never
#: splits again) until something makes it wait for a whole group again.
SPLIT_GROUP = 16
#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 5000
#: How often a live subscriber re-checks the file for appends made by another process.
FOREIGN_APPEND_CHECK_S = 0.5
#: Rows of its own recent appends a store keeps for live subscribers (it trims back to
#: this many once it holds twice as many: a few MB at most with ticket-sized events).
TAIL_EVENTS = 2048
#: How long the writer holds other appends for :meth:`EventStore.append_at_end`.
HOLD_TIMEOUT_S = 2.0
#: How long a batch read waits, at most, for the reader thread to pick up the
#: next batch before it decodes this one (see :meth:`EventStore.read_batches`).
#: The reader is idle during a catch-up, so the wait is a thread hand-off,
#: well under a millisecond; the bound only matters when another read holds it.
READ_AHEAD_HANDOFF_S = 0.005
#: WAL pages after which a commit also checkpoints (SQLite's default is 1000).
#: Every append writes a table page and a leaf page of each of two indexes
#: (event id, stream); 32 appends to 32 streams touch about 50 pages, so at
#: 1000 every twentieth group commit would also copy ~1000 pages into the
#: database file and fsync it.
#: At 10000 (about 40 MB of WAL) checkpoints are ten times rarer, and a page
#: rewritten by many commits in between is copied once. Durability is the
#: same: every commit still fsyncs the WAL before it returns.
WAL_AUTOCHECKPOINT_PAGES = 10_000
#: The WAL is truncated back to this size when it is reset after a checkpoint.
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class _AppendRequest:
    events: list[Prepared]
    expected_version: int | None
    expected_position: int | None
    future: asyncio.Future[list[RecordedEvent]]


@dataclass(slots=True)
class _Fetch:
    """One batch read started on the reader thread."""

    future: asyncio.Future[tuple[bytes | None, int, int | None]]
    #: Set by the reader thread as it picks the read up.
    started: threading.Event
    from_position: int


@dataclass(slots=True)
class _Job:
    """Work that needs the write connection to itself (migrations, import)."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Hold:
    """Appends held at the log's end while the event loop decides what follows it."""

    #: The log's end, once every append queued before the hold is written.
    future: asyncio.Future[int]
    #: The one append to write at that end, or None to let the writer go on.
    channel: queue.SimpleQueue[_AppendRequest | None]
    lock: threading.Lock
    #: Set by the writer when it stopped waiting (:data:`HOLD_TIMEOUT_S`).
    expired: bool = False


@dataclass(slots=True)
class _Stop:
    """The last item the writer thread takes: close the connection and exit."""

    future: asyncio.Future[None]


_WriterItem = _AppendRequest | _Job | _Hold | _Stop


def _connect(
    path: Path, *, readonly: bool, synchronous: Synchronous, busy_timeout_ms: int
) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # Reading the schema version first makes a non-database file fail here, clearly.
    conn.execute("PRAGMA user_version").fetchone()
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"event log {path}: could not switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    conn.execute("PRAGMA cache_size = -8192")
    return conn


def _row_position(row: tuple[Any, ...]) -> int:
    return int(row[0])


#: Larger than any position SQLite can give (the largest signed 64-bit integer).
_MAX_POSITION = 2**63 - 1


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve ``future`` with ``result`` or ``error`` unless its waiter gave up."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class EventStore:
    """The append-only event log in one SQLite file. Open with :meth:`open`."""

    def __init__(
        self, path: Path, *, readonly: bool, synchronous: Synchronous, busy_timeout_ms: int
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.readonly = readonly
        self.synchronous = synchronous
        self._loop = asyncio.get_running_loop()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="eventstore-reader")
        self._rconn: sqlite3.Connection | None = None
        self._wconn: sqlite3.Connection | None = None
        self._wqueue: queue.SimpleQueue[_WriterItem] = queue.SimpleQueue()
        self._wthread: threading.Thread | None = None
        self._closed = False
        self._appended: asyncio.Future[None] = self._loop.create_future()
        #: The highest position appended through this store so far (0 before the first):
        #: a cheap lower bound of where the log ends, known without a read.
        self.appended_through = 0
        #: Rows this store committed last, in position order (see :meth:`subscribe`).
        self._tail: list[tuple[Any, ...]] = []
        #: Where the log ends as the writer last wrote it (writer thread only; None: read it).
        self._tip: Tip | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> EventStore:
        """Open (creating and migrating if needed) the event log at ``path``.

        ``readonly`` opens without the writer, for verify and export against a
        log another process is writing. ``synchronous`` is SQLite's durability
        level: FULL (the default) fsyncs every commit. ``busy_timeout_ms`` is
        how long a write waits for another process's lock before
        :class:`DatabaseLockedError`.
        """
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        store = cls(
            Path(path), readonly=readonly, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms
        )
        try:
            await store._start()
        except BaseException:
            await store._shutdown_threads()
            raise
        return store

    async def _start(self) -> None:
        path = self.path
        if self.readonly and not path.exists():
            # A reading command never creates a log: say so plainly (a typo, the wrong
            # --db or --config), rather than guessing at folders and permissions.
            raise DatabaseUnavailableError(
                f"event log {path} does not exist; check --db, or the [store] path of --config"
            )
        if not self.readonly:
            opened: asyncio.Future[None] = self._loop.create_future()
            self._wthread = threading.Thread(
                target=self._writer_main, args=(opened,), name="eventstore-writer", daemon=True
            )
            self._wthread.start()
            await self._guard(opened)
        self._rconn = await self._guard(
            self._loop.run_in_executor(self._reader, self._open_connection, self.readonly)
        )

    def _open_connection(self, readonly: bool) -> sqlite3.Connection:
        """Open one connection; the writer's migrates, a reader's checks the version."""
        conn = _connect(
            self.path,
            readonly=readonly,
            synchronous=self.synchronous,
            busy_timeout_ms=self.busy_timeout_ms,
        )
        try:
            if readonly:
                check_version(conn, str(self.path))
            else:
                migrate(conn, str(self.path))
        except BaseException:
            conn.close()
            raise
        return conn

    async def _guard(self, awaitable: asyncio.Future[T]) -> T:
        try:
            return await awaitable
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def close(self) -> None:
        """Finish queued appends, then close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._appended.done():
            self._appended.set_result(None)
        await self._shutdown_threads()

    async def _shutdown_threads(self) -> None:
        thread, self._wthread = self._wthread, None
        if thread is not None:
            # Queued after every append already accepted, so those finish first.
            stopped: asyncio.Future[None] = self._loop.create_future()
            self._wqueue.put(_Stop(stopped))
            if thread.is_alive():
                await stopped
            thread.join()
        if self._rconn is not None:
            await self._loop.run_in_executor(self._reader, self._rconn.close)
            self._rconn = None
        self._reader.shutdown(wait=True)

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -------------------------------------------------------------------- append

    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        expected_position: int | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` atomically; return them as recorded, once durable.

        Idempotent on ``event_id``: events already recorded with the same body
        are returned as they were, nothing is written. ``expected_version``
        (all events in one stream; 0 = the stream must not exist yet) raises
        :class:`ConcurrencyError` when the stream has moved on.
        ``expected_position`` (0 = the log must be empty) raises
        :class:`LogMovedError` unless the log ends exactly there: whatever the
        caller decided from the log up to that position, nothing appended since
        can have changed it (the sync engine's decisions). A repeat of events
        already recorded is returned as recorded, wherever the log ends.
        """
        if expected_position is not None and (
            isinstance(expected_position, bool) or expected_position < 0
        ):
            raise InvalidEventError("expected_position must be 0 (empty log) or more")
        if self._closed:
            raise StoreClosedError(f"event log {self.path} is closed")
        if self.readonly:
            raise StoreClosedError(f"event log {self.path} was opened read-only")
        prepared = prepare(events, expected_version)
        if not prepared:
            return []
        future: asyncio.Future[list[RecordedEvent]] = self._loop.create_future()
        self._wqueue.put(_AppendRequest(prepared, expected_version, expected_position, future))
        return await future

    async def append_at_end(
        self, decide: Callable[[int], Awaitable[Sequence[NewEvent]]]
    ) -> list[RecordedEvent]:
        """Append what ``decide(end)`` returns right after ``end``, where the log ends.

        The writer finishes the appends queued before this call, then holds the
        ones queued after it while ``decide`` runs: given the log's last
        position, it brings its view up to there and returns the events that
        follow from it. They are written at once, with nothing in between (as
        with ``expected_position=end``). This is how the sync engine gets its
        decisions in while callbacks keep arriving: a plain conditional append
        finds the log moved on whenever one lands first. ``decide`` must not
        wait for an append itself. If it takes longer than
        :data:`HOLD_TIMEOUT_S`, the writer goes on, and the append is refused
        with :class:`LogMovedError` if anything was appended meanwhile.
        """
        if self._closed:
            raise StoreClosedError(f"event log {self.path} is closed")
        if self.readonly:
            raise StoreClosedError(f"event log {self.path} was opened read-only")
        hold = _Hold(self._loop.create_future(), queue.SimpleQueue(), threading.Lock())
        self._wqueue.put(hold)
        sent = False
        try:
            end = await hold.future
            prepared = prepare(await decide(end), None)
            if not prepared:
                return []
            future: asyncio.Future[list[RecordedEvent]] = self._loop.create_future()
            request = _AppendRequest(prepared, None, end, future)
            with hold.lock:
                if not hold.expired:
                    hold.channel.put(request)
                    sent = True
            if not sent:
                self._wqueue.put(request)
                sent = True
            return await future
        finally:
            if not sent:
                hold.channel.put(None)  # let the writer go on

    async def _run_job(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self.readonly:
            raise StoreClosedError(f"event log {self.path} is closed or read-only")
        future: asyncio.Future[T] = self._loop.create_future()
        self._wqueue.put(_Job(fn, future))
        return await future

    # ------------------------------------------------------------ writer thread

    def _writer_main(self, opened: asyncio.Future[None]) -> None:
        """The writer thread: open the write connection, then serve the queue until stopped."""
        try:
            self._wconn = self._open_connection(False)
        except BaseException as exc:  # reported to open(), which shuts the store down
            self._reply(_settle, opened, None, exc)
            self._drain_after_failure()
            return
        self._reply(_settle, opened, None, None)
        get, get_nowait, empty = self._wqueue.get, self._wqueue.get_nowait, queue.Empty
        #: The later half of a group split in two (see SPLIT_GROUP), written next.
        held: list[_AppendRequest] = []
        #: A job, hold or stop met while grouping: it runs once the appends before it are in.
        carried: _WriterItem | None = None
        while True:
            waited = False
            if held:
                group, held = held, []
            else:
                if carried is not None:
                    item, carried = carried, None
                else:
                    try:
                        item = get_nowait()
                    except empty:
                        item, waited = get(), True
                if not isinstance(item, _AppendRequest):
                    if isinstance(item, _Job):
                        self._run_job_now(item)
                    elif isinstance(item, _Hold):
                        self._hold_now(item)
                    else:
                        self._stop_now(item)
                        return
                    continue
                group = [item]
            # Group every append already queued, up to the next job or stop.
            while carried is None and len(group) < MAX_GROUP:
                try:
                    nxt = get_nowait()
                except empty:
                    break
                if isinstance(nxt, _AppendRequest):
                    group.append(nxt)
                else:
                    carried = nxt
            if waited and len(group) >= SPLIT_GROUP:
                half = (len(group) + 1) // 2
                group, held = group[:half], group[half:]
            self._write_and_reply(group)

    def _write_and_reply(self, group: list[_AppendRequest]) -> None:
        """Writer thread: write ``group`` (one transaction) and hand the outcome to the loop."""
        written: list[tuple[Any, ...]] = []
        results, error = self._write_group_safely(group, written)
        self._reply(self._deliver, group, results, written, error)

    def _write_group_safely(
        self, group: list[_AppendRequest], written: list[tuple[Any, ...]]
    ) -> tuple[list[Outcome] | None, BaseException | None]:
        try:
            return self._write_group(group, written), None
        except sqlite3.Error as exc:
            return None, translate(exc, self.path)
        except Exception as exc:  # the writer must survive to serve the next group
            return None, exc

    def _write_group(
        self, group: list[_AppendRequest], written: list[tuple[Any, ...]]
    ) -> list[Outcome]:
        """Writer thread: the whole group in one transaction, one commit, one fsync.

        ``written`` receives the rows inserted; it is cleared if the commit fails.
        A group decided from the tip is one statement (see :func:`write_group_at_tip`);
        any other reads what it needs inside a transaction.
        """
        conn = self._wconn
        assert conn is not None
        requests = [(r.events, r.expected_version, r.expected_position) for r in group]
        tip, self._tip = self._tip, None
        try:
            if tip is not None:
                results = write_group_at_tip(conn, requests, tip, written)
                if results is not None:
                    self._tip = tip
                    return results
            else:
                tip = Tip(0, GENESIS_HASH, {})
            conn.execute("BEGIN IMMEDIATE")
            slow = write_group(conn, requests, written, tip)
            conn.execute("COMMIT")
        except BaseException:
            written.clear()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._tip = tip
        return list(slow)

    def _hold_now(self, hold: _Hold) -> None:
        """Writer thread: tell the loop where the log ends, then write only its append
        there (or nothing), waiting at most :data:`HOLD_TIMEOUT_S` for it."""
        conn = self._wconn
        assert conn is not None
        try:
            end, _ = head(conn)
        except sqlite3.Error as exc:
            self._reply(_settle, hold.future, None, translate(exc, self.path))
            return
        self._reply(_settle, hold.future, end, None)
        try:
            request = hold.channel.get(timeout=HOLD_TIMEOUT_S)
        except queue.Empty:
            with hold.lock:
                if hold.channel.empty():
                    hold.expired = True  # the caller's append now queues as any other
                    return
            request = hold.channel.get_nowait()
        if request is not None:
            self._write_and_reply([request])

    def _run_job_now(self, job: _Job) -> None:
        conn = self._wconn
        assert conn is not None
        try:
            result = job.fn(conn)
        except sqlite3.Error as exc:
            self._tip = None
            self._reply(_settle, job.future, None, translate(exc, self.path))
        except Exception as exc:
            self._tip = None
            self._reply(_settle, job.future, None, exc)
        else:
            self._check_tip()
            self._reply(self._job_done, job.future, result)

    def _check_tip(self) -> None:
        """Writer thread, after a job: keep the tip only if the log still ends there."""
        conn, tip = self._wconn, self._tip
        if conn is None or tip is None:
            return
        try:
            if head(conn) != (tip.position, tip.hash):
                self._tip = None
        except sqlite3.Error:
            self._tip = None

    def _stop_now(self, stop: _Stop) -> None:
        conn, self._wconn = self._wconn, None
        error: BaseException | None = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                error = translate(exc, self.path)
        self._reply(_settle, stop.future, None, error)

    def _drain_after_failure(self) -> None:
        """The connection never opened: refuse whatever is queued until stopped."""
        while True:
            item = self._wqueue.get()
            if isinstance(item, _Stop):
                self._reply(_settle, item.future, None, None)
                return
            error = StoreClosedError(f"event log {self.path} could not be opened")
            self._reply(_settle, item.future, None, error)

    def _reply(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (from the writer thread)."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    # ------------------------------------------------ back on the event loop

    def _deliver(
        self,
        group: list[_AppendRequest],
        results: list[Outcome] | None,
        written: list[tuple[Any, ...]],
        error: BaseException | None,
    ) -> None:
        """Resolve a group's futures once its transaction is durable (or failed)."""
        if written:
            self._remember(written)
        if results is None:
            for request in group:
                if not request.future.done():
                    request.future.set_exception(error or StoreError("append failed"))
            return
        wrote = False
        through = self.appended_through
        for request, outcome in zip(group, results, strict=True):
            future = request.future
            if isinstance(outcome, BaseException):
                if not future.done():
                    future.set_exception(outcome)
                continue
            wrote = True
            if isinstance(outcome, range):  # new rows, decoded here rather than on the writer
                if outcome and written[outcome[-1]][0] > through:
                    through = written[outcome[-1]][0]
                if not future.done():
                    future.set_result([row_to_event(written[i]) for i in outcome])
                continue
            if outcome and outcome[-1].position > through:
                through = outcome[-1].position
            if not future.done():
                future.set_result(outcome)
        self.appended_through = through
        if wrote:
            self._notify_appended()

    def _remember(self, rows: list[tuple[Any, ...]]) -> None:
        """Keep the rows just committed for live subscribers (see :meth:`subscribe`)."""
        tail = self._tail
        tail.extend(rows)
        if len(tail) > 2 * TAIL_EVENTS:
            del tail[: len(tail) - TAIL_EVENTS]

    def _from_tail(self, position: int, limit: int) -> list[RecordedEvent] | None:
        """The events from ``position`` on, up to ``limit`` and up to the first gap, if this
        store committed the one at ``position`` recently; None when it must be read.

        Each call decodes the rows afresh, as a read would: no two readers share a
        ``data`` dict.
        """
        tail = self._tail
        if not tail or not tail[0][0] <= position <= tail[-1][0]:
            return None
        i = bisect_left(tail, position, key=_row_position)
        if tail[i][0] != position:
            return None  # appended by another process: only the file has it
        events: list[RecordedEvent] = []
        for row in tail[i : i + limit]:
            if row[0] != position:
                break  # another process appended in between
            events.append(row_to_event(row))
            position += 1
        return events

    def _job_done(self, future: asyncio.Future[Any], result: Any) -> None:
        if not future.done():
            future.set_result(result)
        self._notify_appended()

    def _notify_appended(self) -> None:
        done, self._appended = self._appended, self._loop.create_future()
        if not done.done():
            done.set_result(None)

    # --------------------------------------------------------------------- reads

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._rconn is None:
            raise StoreClosedError(f"event log {self.path} is closed")
        conn = self._rconn
        try:
            return await self._loop.run_in_executor(self._reader, fn, conn)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def _select(self, where: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        """Events matching ``where`` (a fixed SQL tail with placeholders), decoded."""
        sql = f"SELECT {PACKED} FROM events WHERE {where}"

        def fetch(conn: sqlite3.Connection) -> list[RecordedEvent]:
            return packed_to_events(conn.execute(sql, params))

        return await self._read(fetch)

    def _fetch_batch(self, from_position: int, until: int, limit: int) -> _Fetch:
        """Start reading one packed batch on the reader thread; finish it with :meth:`_decode`."""
        if self._rconn is None:
            raise StoreClosedError(f"event log {self.path} is closed")
        conn = self._rconn
        started = threading.Event()

        def fetch() -> tuple[bytes | None, int, int | None]:
            started.set()
            row = conn.execute(PACKED_BATCH, (from_position, until, limit)).fetchone()
            return row[0], row[1], row[2]

        return _Fetch(self._loop.run_in_executor(self._reader, fetch), started, from_position)

    async def _fetched(self, fetch: _Fetch) -> tuple[bytes | None, int, int | None]:
        """A started batch's packed rows, event count and last position."""
        try:
            return await fetch.future
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    async def _decode(
        self, raw: tuple[bytes | None, int, int | None], from_position: int, until: int, limit: int
    ) -> list[RecordedEvent]:
        """The events of one batch read by :meth:`_fetched`."""
        blob, count, _ = raw
        events = packed_batch_to_events(blob, count)
        if events is None:  # a malformed row: the per-row read names it
            events = await self._select(
                "position >= ? AND position <= ? ORDER BY position LIMIT ?",
                (from_position, until, limit),
            )
        return events

    async def read_batch(
        self, from_position: int, limit: int, *, until: int | None = None
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events from ``from_position`` on (to ``until``, inclusive), in order.

        A bounded read of events this store committed recently is served from them
        (see :meth:`subscribe`) when they cover the whole range, with no thread hop.
        """
        if until is not None and limit > 0:
            top = min(until, from_position + limit - 1)
            events = self._from_tail(from_position, top - from_position + 1)
            if events and events[-1].position == top:
                return events
        last = _MAX_POSITION if until is None else until
        raw = await self._fetched(self._fetch_batch(from_position, last, limit))
        return await self._decode(raw, from_position, last, limit)

    async def read_batches(
        self, from_position: int = 1, *, batch_size: int = 1000, until: int | None = None
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        """The events from ``from_position`` (to ``until``, inclusive) in batches, in order.

        The reader thread reads the next batch while this one is decoded and
        consumed. SQLite builds a batch with the GIL released, but the thread
        needs the GIL to start, and decoding holds it for one long ``orjson``
        call; so before decoding, this waits (briefly, at most
        :data:`READ_AHEAD_HANDOFF_S`) until the reader has picked up the next
        batch. Without that wait the reader would start only once decoding
        ended, and the two would run one after the other instead of overlapping.
        """
        last = _MAX_POSITION if until is None else until
        fetch: _Fetch | None = self._fetch_batch(from_position, last, batch_size)
        try:
            while fetch is not None:
                raw = await self._fetched(fetch)
                position, fetch = fetch.from_position, None
                count, top = raw[1], raw[2]
                more = count >= batch_size and top is not None and top < last
                if more:
                    assert top is not None
                    fetch = self._fetch_batch(top + 1, last, batch_size)
                    fetch.started.wait(READ_AHEAD_HANDOFF_S)
                events = await self._decode(raw, position, last, batch_size)
                if events:
                    yield events
                # Drop this batch before decoding the next: the allocator then reuses
                # its memory, warm in the cache, instead of taking fresh pages, which
                # makes decoding markedly faster. The caller should let go too.
                del events
                if not more:
                    return
        finally:
            if fetch is not None:
                # Stopped early: nobody awaits the prefetch; retrieve its outcome.
                fetch.future.add_done_callback(_ignore_outcome)

    async def read(
        self, from_position: int = 1, *, batch_size: int = 1000, until: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """Every event from ``from_position`` (to ``until``, inclusive), in order."""
        batches = self.read_batches(from_position, batch_size=batch_size, until=until)
        try:
            async for batch in batches:
                for event in batch:
                    yield event
                # Let the batch go before the next one is decoded (see read_batches).
                del batch
        finally:
            await batches.aclose()

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        """A stream's events in version order."""
        return await self._select(
            "stream = ? AND stream_version >= ? ORDER BY stream_version", (stream, from_version)
        )

    async def last_in_stream(self, stream: str) -> RecordedEvent | None:
        """A stream's latest event, or None when the stream does not exist."""
        found = await self._select("stream = ? ORDER BY stream_version DESC LIMIT 1", (stream,))
        return found[0] if found else None

    async def read_ticket(self, tenant: str | None, ticket: str) -> list[RecordedEvent]:
        """Every event about one ticket of one tenant, in log order."""
        return await self._select(
            "stream IN (SELECT stream FROM ticket_streams WHERE tenant = ? AND ticket = ?) "
            "AND tenant IS ? AND ticket = ? ORDER BY position",
            (tenant or "", ticket, tenant, ticket),
        )

    async def get(self, event_id: str) -> RecordedEvent | None:
        """The event with this id, if recorded."""
        found = await self._select("event_id = ?", (event_id,))
        return found[0] if found else None

    async def last_position(self) -> int:
        """The position of the newest event (0 for an empty log)."""

        def fetch(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT MAX(position) FROM events").fetchone()
            return int(row[0] or 0)

        return await self._read(fetch)

    async def subscribe(
        self,
        from_position: int = 1,
        *,
        batch_size: int = 1000,
        foreign_check_s: float = FOREIGN_APPEND_CHECK_S,
    ) -> AsyncIterator[RecordedEvent]:
        """Catch up from ``from_position``, then follow new appends live until closed.

        Appends through this store wake subscribers at once, and a subscriber
        that keeps up takes them from the rows the writer just committed
        (the last :data:`TAIL_EVENTS`) instead of reading them back through the
        reader thread: two thread hand-offs and a query fewer per append on the
        daemon's path from a callback to its sync decision. Appends made by
        another process on the same file are read from the file, and are picked
        up within ``foreign_check_s``.
        """
        position = from_position
        read_file = True  # at the start, and after a wait for this store's appends timed out
        while not self._closed:
            # Take the wake-up future before reading, so an append that lands
            # between the read and the wait is never missed.
            appended = self._appended
            batch = self._from_tail(position, batch_size)
            if not batch and (read_file or position <= self.appended_through):
                # Caught up with this store's own appends, only another process can
                # have appended more: the file is read once a wait times out, not at
                # every wake-up (a thread hand-off and a query per append otherwise).
                batch = await self.read_batch(position, batch_size)
                read_file = bool(batch)
            if batch:
                for event in batch:
                    yield event
                position = batch[-1].position + 1
                continue
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races its timeout, and the subscriber would never stop.
            done, _ = await asyncio.wait((appended,), timeout=foreign_check_s)
            read_file = not done

    # ----------------------------------------------------------- maintenance

    async def run_exclusive(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the write connection with no append in between (import)."""
        return await self._run_job(fn)

    async def read_connection_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn`` on the reader connection (verify, export)."""
        return await self._read(fn)
