"""What both desks' pollers share: the schedule they run on, and what a fresh read records.

:class:`BasePoller` runs a reconciliation pass every interval and reads kicked
tickets at once (a callback or webhook arrived, or the outbox found a ticket
changed behind its back); a failed pass is logged and retried at the next
interval, never the end of the task. Each desk's poller implements the pass
(``poll_once``) and the one-ticket read (``refresh``).

Recording what a read shows. Both pollers (and the re-reads the outbox asks of
them) record a ticket only when it differs from its last recorded observation,
whichever path recorded that one (callback, webhook, poll or fetch). Source
times have one-second resolution, so the time alone cannot name an observation:
a ticket can go A -> B -> A within one second. A polled observation's id is
therefore derived from the ticket, its time, a digest of its content *and* the
observation it follows. A repeat of the same read (a crash between the append
and the watermark, a re-read page) is written once; a ticket that came back to
an earlier state after another one is written again, so sync sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog

from daemon.connectors.contract import PollReport
from daemon.connectors.remote import request_purpose
from eventstore import (
    DatabaseUnavailableError,
    EventStore,
    NewEvent,
    RecordedEvent,
    derived_event_id,
)

#: Keys that say how or why an observation was made, not what the ticket holds.
HOW = frozenset({"via", "action", "message_id", "updated_by", "own_write", "change",
                 "read_after", "fresh", "fetch"})  # fmt: skip
#: Events read from the end of a ticket's stream (more when no observation is among them).
RECENT_EVENTS = 64


def content(data: Mapping[str, Any]) -> dict[str, Any]:
    """What an observation says of the ticket itself."""
    return {k: v for k, v in data.items() if k not in HOW}


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return content(a) == content(b)


def digest(data: Mapping[str, Any]) -> str:
    """A short digest of an observation's whole ``data`` but ``via`` (which the id names
    already): one id never stands for two bodies."""
    body = orjson.dumps({k: v for k, v in data.items() if k != "via"}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


async def recent(store: EventStore, stream: str, type_: str) -> tuple[list[RecordedEvent], bool]:
    """The stream's latest events, enough to hold its last ``type_`` event, and whether
    they are the whole stream.

    A busy ticket's stream grows with every delivery: reading all of it on every
    refresh would make each one cost more than the one before.
    """
    last = await store.last_in_stream(stream)
    if last is None:
        return [], True
    window = RECENT_EVENTS
    while True:
        start = max(1, last.stream_version - window + 1)
        events = await store.read_stream(stream, start)
        if start == 1 or any(e.type == type_ for e in events):
            return events, start == 1
        window *= 8


def last_of(events: list[RecordedEvent], type_: str) -> RecordedEvent | None:
    return next((e for e in reversed(events) if e.type == type_), None)


async def record_poll(
    store: EventStore,
    stream: str,
    type_: str,
    data: Mapping[str, Any],
    build: Callable[[str], NewEvent],
) -> tuple[list[RecordedEvent], bool, bool]:
    """Append ``build(event_id)`` unless ``data`` says what the stream's last ``type_``
    observation says; return the recent events read (see :func:`recent`), whether they
    are the whole stream, and whether an event was written.

    The id names the source, the stream, the time, a digest of ``data`` and the
    observation it follows. Raises what :meth:`EventStore.append` raises.
    """
    events, whole = await recent(store, stream, type_)
    last = last_of(events, type_)
    if last is not None and same_content(last.data, data):
        return events, whole, False
    follows = last.event_id if last is not None else ""
    event_id = derived_event_id("poll", stream, str(data.get("updated_at")), digest(data), follows)
    [recorded] = await store.append([build(event_id)])
    # An id recorded before returns its old position and writes nothing.
    return events, whole, recorded.position > (events[-1].position if events else 0)


class BasePoller:
    """The schedule both desks' pollers run on; subclasses read their desk.

    ``interval`` is seconds between passes. :meth:`kick` asks for :meth:`refresh` of a
    ticket soon: it is called on the request path, so it only notes the ticket.
    """

    def __init__(self, interval: float, log: structlog.typing.FilteringBoundLogger) -> None:
        self.interval = interval
        self._log = log
        self._kicked: dict[int, str | None] = {}
        self._wake = asyncio.Event()
        self._poll_now = False
        self._on_pass: list[Callable[[PollReport], None]] = []
        self._on_unwritable: Callable[[str], None] | None = None

    def on_unwritable(self, report: Callable[[str], None]) -> None:
        """Pass a log that cannot be written to ``report`` instead of logging each failed
        pass: whoever tracks it says once when writing stops and once when it resumes."""
        self._on_unwritable = report

    def _failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, DatabaseUnavailableError) and self._on_unwritable is not None:
            self._on_unwritable(str(exc))
            return
        self._log.error(what, error=str(exc), error_type=type(exc).__name__)

    async def poll_once(self) -> PollReport:
        raise NotImplementedError

    async def refresh(self, ticket_id: int, tenant: str | None = None) -> PollReport:
        raise NotImplementedError

    def poll_now(self) -> None:
        """Run a whole reconciliation pass at once rather than at the next interval."""
        self._poll_now = True
        self._wake.set()

    def kick(self, ticket_id: int, tenant: str | None = None) -> None:
        self._kicked[int(ticket_id)] = tenant
        self._wake.set()

    def on_pass(self, listener: Callable[[PollReport], None]) -> None:
        """Call ``listener`` with the report of every completed pass (metrics)."""
        self._on_pass.append(listener)

    async def refresh_kicked(self) -> PollReport:
        """Refresh every ticket kicked so far, lowest id first; the reports added up.

        One round each time: tickets kicked again meanwhile wait for the next. Under a
        steady stream of callbacks every ticket is kicked again within seconds, and
        taking the lowest kicked id each time would read the lowest tickets over and
        over while the others (and the reconciliation pass) waited for the stream to end.
        """
        total = PollReport()
        for ticket_id in sorted(self._kicked):
            if ticket_id not in self._kicked:
                continue
            tenant = self._kicked.pop(ticket_id)
            report = await self.refresh(ticket_id, tenant)
            total.seen += report.seen
            total.tickets_recorded += report.tickets_recorded
            total.notes_recorded += report.notes_recorded
            total.ignored += report.ignored
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every interval and kicked tickets at once, until ``stop`` is set.

        A kick reads only the kicked tickets and their notes: a whole pass per callback
        would spend the rate-capped API budget the outbox's writes wait for.
        """
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.refresh_kicked()
            except Exception as exc:  # retried at the next pass, which reads it too
                self._failed("refresh.failed", exc)
            if loop.time() >= next_poll or self._poll_now:
                self._poll_now = False
                next_poll = loop.time() + self.interval
                try:
                    with request_purpose("poll"):
                        report = await self.poll_once()
                except Exception as exc:  # the loop must outlive a remote outage
                    self._failed("poll.failed", exc)
                else:
                    self._log.info("poll.done", **report.__dict__)
                    for listener in self._on_pass:
                        listener(report)
            if self._kicked:
                continue  # kicked while this pass ran: refresh those now
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(
                waiters, timeout=max(0.0, next_poll - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            for w in waiters:
                w.cancel()
