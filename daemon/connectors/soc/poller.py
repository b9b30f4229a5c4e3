"""Reconciliation polling of the SOC desk: catches what webhooks missed.

Reads the cursor-based incremental ticket export (NOTES §2.7) from a durable
cursor: the ``data.cursor`` of the last ``poller.watermark.advanced`` event
in stream ``poller:soc`` (one event per advance, appended with optimistic
concurrency so two pollers cannot both advance it). The first poll starts
``poll_lookback_seconds`` back. For each exported ticket of a configured
tenant it appends a ``soc.ticket.observed`` (``via: poll``) when the ticket
differs from its last recorded observation (``daemon/connectors/polling.py``: an
unchanged ticket is written once, a re-read page writes nothing) and any
comment not yet observed by either path. Everything is appended before the
cursor moves, so a crash mid-page re-reads the page and writes nothing twice.
Tickets of organizations that are not tenants are skipped and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from daemon.connectors.polling import record_poll
from daemon.connectors.soc import observe
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.settings import SocSettings
from eventstore import DuplicateEventError, EventStore, NewEvent

POLLER_STREAM = "poller:soc"
WATERMARK_TYPE = "poller.watermark.advanced"
Clock = Callable[[], datetime]


@dataclass
class PollReport:
    """What one poll did."""

    pages: int = 0
    tickets_seen: int = 0
    tickets_observed: int = 0
    comments_observed: int = 0
    skipped_not_tenant: int = 0
    cursor: str | None = None


class SocPoller:
    """Incremental-export reconciliation for the SOC side."""

    def __init__(
        self,
        store: EventStore,
        client: SocClient,
        settings: SocSettings,
        tenants: Mapping[int, str],
        clock: Clock,
    ) -> None:
        self.store = store
        # The poller's reads yield to the outbox's (see ConnectWisePoller).
        self.client = client.background()
        self.settings = settings
        # Consulted at every ticket: a live mapping follows tenant switches (R9).
        self.tenants = tenants
        self.clock = clock
        self._log = structlog.get_logger("socbridge.soc.poller")
        self._kicked: dict[int, str] = {}
        self._wake = asyncio.Event()

    def kick(self, ticket_id: int, tenant: str) -> None:
        """Read this ticket and its comments soon (a new ticket's description, or a
        ticket the outbox found changed behind its back)."""
        self._kicked[int(ticket_id)] = tenant
        self._wake.set()

    async def refresh_kicked(self) -> int:
        """Observe every kicked ticket and its comments; return how many events were new."""
        report = PollReport()
        while self._kicked:
            ticket_id, _tenant = self._kicked.popitem()
            await self._observe(await self.client.get_ticket(ticket_id), report)
        return report.tickets_observed + report.comments_observed

    async def poll_once(self) -> PollReport:
        """Read the export from the stored cursor to its end."""
        report = PollReport()
        last = await self.store.last_in_stream(POLLER_STREAM)
        version = last.stream_version if last else 0
        cursor: str | None = last.data.get("cursor") if last else None
        start_time: int | None = None
        if cursor is None:
            start_time = int(self.clock().timestamp()) - self.settings.poll_lookback_seconds
        while True:
            page = await self.client.incremental_tickets(start_time=start_time, cursor=cursor)
            report.pages += 1
            for ticket in page.tickets:
                await self._observe(ticket, report)
            if page.after_cursor and page.after_cursor != cursor:
                recorded = await self.store.append(
                    [
                        NewEvent(
                            stream=POLLER_STREAM,
                            type=WATERMARK_TYPE,
                            data={
                                "cursor": page.after_cursor,
                                "previous_cursor": cursor,
                                "start_time": start_time,
                                "tickets": len(page.tickets),
                                "end_of_stream": page.end_of_stream,
                            },
                            source="soc",
                        )
                    ],
                    expected_version=version,
                )
                version = recorded[-1].stream_version
                cursor, start_time = page.after_cursor, None
            if page.end_of_stream or not page.tickets:
                break
        report.cursor = cursor
        self._log.info("soc.poll.done", **report.__dict__)
        return report

    async def _observe(self, ticket: Mapping[str, Any], report: PollReport) -> None:
        report.tickets_seen += 1
        org = ticket.get("organization_id")
        tenant = self.tenants.get(int(org)) if org is not None else None
        if tenant is None:
            report.skipped_not_tenant += 1
            return
        tid = int(ticket["id"])
        data = observe.ticket_data(ticket, via="poll", change=None)
        _events, _whole, wrote = await record_poll(
            self.store, observe.ticket_stream(tid), observe.TICKET_OBSERVED, data,
            lambda event_id: observe.ticket_event(tenant=tenant, data=data, event_id=event_id,
                                                  occurred_at=ticket.get("updated_at")),
        )  # fmt: skip
        report.tickets_observed += wrote
        await self._observe_comments(tid, tenant, report)

    async def _observe_comments(self, tid: int, tenant: str, report: PollReport) -> None:
        for comment in await self.client.list_comments(tid):
            cid = int(comment["id"])
            if await self.store.get(observe.comment_event_id(cid)) is not None:
                continue
            try:
                await self.store.append(
                    [
                        observe.comment_event(
                            tenant=tenant,
                            ticket_id=tid,
                            comment_id=cid,
                            body=comment.get("body"),
                            public=bool(comment.get("public")),
                            author_id=observe.opt_int(comment.get("author_id")),
                            author_is_staff=None,
                            created_at=comment.get("created_at"),
                            via="poll",
                        )
                    ]
                )
                report.comments_observed += 1
            except DuplicateEventError:
                pass  # a webhook recorded it meanwhile

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval_seconds`` until ``stop`` is set; a failed
        poll is logged and retried at the next interval (the cursor did not move)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # the loop must survive a remote outage
                self._log.error("soc.poll.failed", error=str(exc), error_type=type(exc).__name__)
            next_poll = loop.time() + self.settings.poll_interval_seconds
            while not stop.is_set() and loop.time() < next_poll:
                self._wake.clear()
                try:
                    await self.refresh_kicked()
                except Exception as exc:  # retried at the next full poll
                    self._log.error("soc.refresh.failed", error=str(exc))
                waiters = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                ]
                await asyncio.wait(
                    waiters,
                    timeout=max(0.0, next_poll - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for waiter in waiters:
                    waiter.cancel()
