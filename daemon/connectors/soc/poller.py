"""Reconciliation polling of the SOC desk: catches what webhooks missed.

Reads the cursor-based incremental ticket export
(../shared/reference/zendesk/NOTES.md §2.7) from a durable cursor: the
``data.cursor`` of the last ``poller.watermark.advanced`` event in stream
``poller:soc`` (one event per advance, appended with optimistic concurrency so
two pollers cannot both advance it). The first poll starts
``poll_lookback_seconds`` back. For each exported ticket of a configured
tenant it appends a ``soc.ticket.observed`` (``via: poll``) when the ticket
differs from its last recorded observation (``daemon/connectors/polling.py``:
an unchanged ticket is written once, a re-read page writes nothing) and any
comment not yet observed by either path. Everything is appended before the
cursor moves, so a crash mid-page re-reads the page and writes nothing twice.
Tickets of organizations that are not tenants are skipped and counted. The
schedule (a pass every interval, kicked tickets at once) is
:class:`daemon.connectors.polling.BasePoller`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from daemon.connectors.contract import PollReport
from daemon.connectors.polling import BasePoller, record_poll
from daemon.connectors.soc import observe
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.settings import SocSettings
from eventstore import DuplicateEventError, EventStore, NewEvent
from projections import kinds

WATERMARK_STREAM = "poller:soc"
Clock = Callable[[], datetime]


class SocPoller(BasePoller):
    """Incremental-export reconciliation for the SOC side."""

    def __init__(
        self,
        store: EventStore,
        client: SocClient,
        settings: SocSettings,
        tenants: Mapping[int, str],
        clock: Clock,
    ) -> None:
        # Bound here, not at import: logging is configured by then.
        log = structlog.get_logger("socbridge.poller").bind(desk="soc")
        super().__init__(settings.poll_interval_seconds, log)
        self.store = store
        # The poller's reads yield to the outbox's (see ConnectWisePoller).
        self.client = client.background()
        self.settings = settings
        # Consulted at every ticket: a live mapping follows tenant switches (R9).
        self.tenants = tenants
        self.clock = clock

    async def watermark(self) -> str | None:
        """The export cursor the next pass starts from."""
        last = await self.store.last_in_stream(WATERMARK_STREAM)
        cursor = last.data.get("cursor") if last is not None else None
        return str(cursor) if cursor is not None else None

    async def refresh(self, ticket_id: int, tenant: str | None = None) -> PollReport:
        """Read one ticket and its comments now (a new ticket's description, or a ticket
        the outbox found changed behind its back)."""
        report = PollReport()
        await self._observe(await self.client.get_ticket(ticket_id), report)
        return report

    async def poll_once(self) -> PollReport:
        """Read the export from the stored cursor to its end."""
        report = PollReport()
        last = await self.store.last_in_stream(WATERMARK_STREAM)
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
                            stream=WATERMARK_STREAM,
                            type=kinds.WATERMARK_ADVANCED,
                            data={
                                "cursor": page.after_cursor,
                                "previous_cursor": cursor,
                                "start_time": start_time,
                                "tickets": len(page.tickets),
                                "end_of_stream": page.end_of_stream,
                            },
                            source=observe.SOURCE,
                        )
                    ],
                    expected_version=version,
                )
                version = recorded[-1].stream_version
                cursor, start_time = page.after_cursor, None
            if page.end_of_stream or not page.tickets:
                break
        report.watermark = cursor
        return report

    async def _observe(self, ticket: Mapping[str, Any], report: PollReport) -> None:
        report.seen += 1
        org = ticket.get("organization_id")
        tenant = self.tenants.get(int(org)) if org is not None else None
        if tenant is None:
            report.ignored += 1
            return
        tid = int(ticket["id"])
        data = observe.ticket_data(ticket, via="poll", change=None)
        _events, _whole, wrote = await record_poll(
            self.store, observe.stream_for(tid), kinds.SOC_TICKET_OBSERVED, data,
            lambda event_id: observe.ticket_event(tenant=tenant, data=data, event_id=event_id,
                                                  occurred_at=ticket.get("updated_at")),
        )  # fmt: skip
        report.tickets_recorded += wrote
        await self._observe_comments(tid, tenant, report)

    async def _observe_comments(self, tid: int, tenant: str, report: PollReport) -> None:
        for comment in await self.client.list_comments(tid):
            cid = int(comment["id"])
            if await self.store.get(observe.note_event_id(cid)) is not None:
                continue
            try:
                await self.store.append(
                    [
                        observe.note_event(
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
                report.notes_recorded += 1
            except DuplicateEventError:
                pass  # a webhook recorded it meanwhile
