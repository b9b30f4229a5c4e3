"""Reconciliation polling: catch what ConnectWise callbacks missed.

Every ``poll_interval_seconds`` the poller lists the integration board's
tickets updated since the watermark (../shared/reference/connectwise/NOTES.md
§2), appends a ``connectwise.ticket.observed`` (``via: "poll"``) for each one
whose content differs from the last observation, and a
``connectwise.note.observed`` for each of its notes (idempotent per note
version). The watermark is the largest ``lastUpdated`` seen, ConnectWise's own
clock (so host clock skew does not matter), kept durably as a
``poller.watermark.advanced`` event in stream ``poller:connectwise``. The very
first poll looks back ``poll_initial_lookback_hours`` (host clock), so a
long-lived board's history is not imported wholesale.

``lastUpdated`` has one-second resolution, so the watermark's second may still
receive changes after a pass has listed it: a pass lists ``lastUpdated >=
[watermark]``. Once a listing was made after that second ended on
ConnectWise's clock, the second is *closed*: that listing saw every change
stamped with it, and later passes list ``lastUpdated > [watermark]`` instead,
so an idle pass costs one request rather than re-reading the watermark second's
tickets and their notes. When the second ended is known from the local
monotonic clock only: ConnectWise's clock had reached the second when the
listing that showed it was answered, so a listing that starts
:data:`CLOSE_AFTER_SECONDS` later is made after it ended. Closing is kept in
memory only: after a restart the persisted watermark is listed inclusively
again.

:meth:`ConnectWisePoller.kick_notes` (wired to the callback intake) asks for
an early read of one ticket's notes: intake may not call the API on the request
path, and callbacks carry the ticket but no notes, so the poller reads them
right after (one request, not two: the callback's ticket is recorded already).
:meth:`ConnectWisePoller.kick` asks for the ticket and its notes. The
schedule (a pass every interval, kicked tickets at once) is
:class:`daemon.connectors.polling.BasePoller`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.errors import NotFoundError
from daemon.connectors.connectwise.observe import (
    SOURCE,
    note_event,
    route_ticket,
    stream_for,
    ticket_data,
    ticket_event,
)
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.contract import PollReport
from daemon.connectors.polling import BasePoller, recent, record_poll
from eventstore import DuplicateEventError, EventStore, NewEvent, RecordedEvent
from projections import kinds

WATERMARK_STREAM = "poller:connectwise"

#: How long after ConnectWise's clock was known to have reached a second a listing must
#: start to be made after that second ended: the second itself, and a margin for the
#: rates at which the two clocks run and for a write stamped a little before its commit.
CLOSE_AFTER_SECONDS = 1.25


@dataclass(frozen=True)
class WatermarkSecond:
    """What this process knows of the watermark's second."""

    #: The watermark, a ``lastUpdated`` (whole seconds, ConnectWise's clock).
    stamp: str
    #: Local monotonic time by which ConnectWise's clock had reached ``stamp``.
    reached_by: float
    #: Whether a listing was made after the second ended (see the module docstring).
    closed: bool = False


class ConnectWisePoller(BasePoller):
    """Polls the integration board and appends what the event log lacks."""

    def __init__(
        self,
        store: EventStore,
        client: ConnectWiseClient,
        settings: ConnectWiseSettings,
        tenants: Mapping[int, str],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Bound here, not at import: logging is configured by then.
        log = structlog.get_logger("socbridge.poller").bind(desk="cw")
        super().__init__(settings.poll_interval_seconds, log)
        self.store = store
        self._now = now
        self._monotonic = monotonic
        self._second: WatermarkSecond | None = None
        #: Kicked tickets whose notes alone are to be read (see kick_notes).
        self._notes_only: set[int] = set()
        # The poller's reads yield to the outbox's: a pass over the board lists every
        # ticket's notes, a burst the outbox's writes must not queue behind.
        self.client = client.background()
        self.settings = settings
        # Consulted at every ticket: a live mapping follows tenant switches (R9).
        self.tenants = tenants

    async def watermark(self) -> str | None:
        last = await self.store.last_in_stream(WATERMARK_STREAM)
        return str(last.data["watermark"]) if last is not None else None

    def _conditions(self, watermark: str | None, *, closed: bool = False) -> str:
        board = self.settings.board.replace("'", "''")
        cond = f"board/name = '{board}'"
        if watermark is None:
            return cond
        return cond + f" and lastUpdated {'>' if closed else '>='} [{watermark}]"

    def _known_second(self, watermark: str | None, started: float) -> WatermarkSecond | None:
        """What is known of ``watermark``'s second at local time ``started``."""
        if watermark is None:
            return None
        if self._second is not None and self._second.stamp == watermark:
            return self._second
        # Read from the log (a restart): ConnectWise's clock had reached it before it was
        # recorded, but whether a listing was made after it ended is not known.
        return WatermarkSecond(watermark, started)

    async def poll_once(self) -> PollReport:
        """One reconciliation pass over the board since the watermark."""
        report = PollReport()
        watermark = await self.watermark()
        # Before the listing's first request: it starts no earlier than this.
        started = self._monotonic()
        second = self._known_second(watermark, started)
        closed = second is not None and second.closed
        closing = second is not None and started >= second.reached_by + CLOSE_AFTER_SECONDS
        newest, newest_at = watermark, started
        since = watermark
        lookback = self.settings.poll_initial_lookback_hours
        if since is None and lookback is not None:
            # First poll ever: the host clock is good enough for a rough start.
            start = self._now() - timedelta(hours=lookback)
            since = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        async for ticket in self.client.iter_tickets(
            conditions=self._conditions(since, closed=closed),
            order_by="_info/lastUpdated asc, id asc",
        ):
            report.seen += 1
            await self._observe(ticket, report)
            updated = (ticket.get("_info") or {}).get("lastUpdated")
            if isinstance(updated, str) and (newest is None or updated > newest):
                # Answered by now, so ConnectWise's clock has reached ``updated``.
                newest, newest_at = updated, self._monotonic()
        if newest is not None and newest != watermark:
            await self.store.append([
                NewEvent(stream=WATERMARK_STREAM, type=kinds.WATERMARK_ADVANCED, source=SOURCE,
                         data={"watermark": newest, "previous": watermark, "seen": report.seen}),
            ])  # fmt: skip
            self._second = WatermarkSecond(newest, newest_at)
        elif second is not None:
            # Only a whole pass closes the second: a failed one saw part of it.
            self._second = replace(second, closed=second.closed or closing)
        report.watermark = newest
        return report

    def kick(self, ticket_id: int, tenant: str | None = None) -> None:
        self._notes_only.discard(int(ticket_id))
        super().kick(ticket_id, tenant)

    def kick_notes(self, ticket_id: int, tenant: str | None = None) -> None:
        """Ask for a read of this ticket's notes soon (a callback recorded the ticket)."""
        if tenant is None:
            self.kick(ticket_id, tenant)
            return
        if int(ticket_id) not in self._kicked:  # else a whole read is asked for already
            self._notes_only.add(int(ticket_id))
        super().kick(ticket_id, tenant)

    async def refresh(self, ticket_id: int, tenant: str | None = None) -> PollReport:
        """Read one ticket and its notes now (after a callback: only its notes)."""
        report = PollReport()
        if ticket_id in self._notes_only and tenant is not None:
            self._notes_only.discard(ticket_id)
            try:
                notes = await self.client.list_notes(ticket_id)
            except NotFoundError:
                return report  # deleted meanwhile: its delete callback says so
            if notes:
                # The stream's recent events spare a look-up per note already recorded.
                # Read only when there are notes: a ticket without any has none among
                # them, so the read would reach back to the stream's first event (every
                # callback of it) for nothing.
                stream = stream_for(ticket_id)
                events, whole = await recent(self.store, stream, kinds.CW_NOTE_OBSERVED)
                await self._observe_notes(
                    ticket_id, tenant, events, whole=whole, report=report, notes=notes
                )
            return report
        try:
            ticket = await self.client.get_ticket(ticket_id)
        except NotFoundError:
            return report  # deleted meanwhile: the delete callback or audit covers it
        report.seen += 1
        await self._observe(ticket, report)
        return report

    async def _observe(self, ticket: Mapping[str, Any], report: PollReport) -> None:
        tenant, _why = await route_ticket(self.store, self.settings.board, self.tenants, ticket)
        if tenant is None or tenant not in self.tenants.values():  # unknown, or sync off
            report.ignored += 1
            return
        ticket_id = int(ticket["id"])
        data = ticket_data(ticket, via="poll", api_member=self.settings.api_member)
        stream = stream_for(ticket_id)
        try:
            events, whole, wrote = await record_poll(
                self.store, stream, kinds.CW_TICKET_OBSERVED, data,
                lambda event_id: ticket_event(
                    tenant=tenant, data=data, event_id=event_id, occurred_at=data["updated_at"]
                ),
            )  # fmt: skip
        except DuplicateEventError as exc:
            # Same natural key, different body: only possible if normalisation changed
            # between versions; the first observation stands. The notes are still read.
            self._log.warning("poll.duplicate_key", error=str(exc))
            events, whole, wrote = [], False, False
        report.tickets_recorded += wrote
        await self._observe_notes(ticket_id, tenant, events, whole=whole, report=report)

    async def _observe_notes(
        self, ticket_id: int, tenant: str, events: list[RecordedEvent], *, whole: bool,
        report: PollReport, notes: list[Any] | None = None,
    ) -> None:  # fmt: skip
        """Append the ticket's notes the log lacks; ``events`` are its stream's recent
        events (``whole``: all of them), which need no look-up. ``notes``: as listed
        already (else listed now)."""
        known = {e.event_id for e in events}
        if notes is None:
            notes = await self.client.list_notes(ticket_id)
        for note in notes:
            event = note_event(note, ticket_id, tenant, api_member=self.settings.api_member)
            if event.event_id in known:
                continue
            if not whole and await self.store.get(event.event_id) is not None:
                continue  # recorded before the recent events read
            if await self._append(event, after=events[-1].position if events else 0):
                report.notes_recorded += 1

    async def _append(self, event: NewEvent, *, after: int) -> bool:
        """Append ``event``; whether it was new (recorded above position ``after``, the
        stream's last event when it was read; an id recorded before returns its old
        position and writes nothing)."""
        try:
            [recorded] = await self.store.append([event])
        except DuplicateEventError:
            # Same natural key, different body: only possible if normalisation
            # changed between versions; the first observation stands.
            self._log.warning("poll.duplicate_key", event_id=event.event_id)
            return False
        return recorded.position > after
