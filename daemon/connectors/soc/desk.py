"""The SOC desk as a :class:`~daemon.connectors.contract.Desk`: what the outbox asks of it.

Creates carry the marker ``external_id = socbridge:cw:{id}`` and an
``Idempotency-Key`` (../shared/reference/zendesk/NOTES.md §2.6), and are found
by ``external_id`` (not unique on the desk, §2.1: the lowest id wins). A note
is a comment added by a ticket update (§2.3); the update's audit names the new
comment (§2.4), and when it does not, the comment is found by its marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.connectors.contract import Note, Record, text_param
from daemon.connectors.desk import BaseDesk
from daemon.connectors.soc import observe
from daemon.connectors.soc.client import SocClient
from eventstore import NewEvent
from projections import kinds
from projections.state import FieldName, JsonObject, PendingCommand

SOLVED = ("solved", "closed")


class SocDesk(BaseDesk):
    """The outbox's view of the SOC desk (see the contract for each method)."""

    side = "soc"
    observed_type = kinds.SOC_TICKET_OBSERVED
    source = observe.SOURCE
    client: SocClient

    @staticmethod
    def field_values(ticket: Record, normalize: JsonObject | None = None) -> dict[FieldName, str]:
        """A SOC ticket's status and priority as sync compares them (R7: solved or open)."""
        return {
            "status": "solved" if ticket.get("status") in SOLVED else "open",
            "priority": ticket.get("priority") or "normal",
        }

    async def read_notes(self, ticket_id: int) -> list[Note]:
        return [
            Note(int(c["id"]), str(c.get("body") or ""))
            for c in await self.client.list_comments(ticket_id)
        ]

    async def create_ticket(self, params: JsonObject, *, idempotency_key: str) -> int:
        organization = params.get("organization_id")
        if not isinstance(organization, int):
            raise ValueError("command parameter 'organization_id' is not an integer")
        ticket = await self.client.create_ticket(
            subject=text_param(params, "subject"),
            body=text_param(params, "body"),
            organization_id=organization,
            external_id=text_param(params, "external_id"),
            priority=text_param(params, "priority"),
            public=True,
            idempotency_key=idempotency_key,
        )
        return int(ticket["id"])

    async def find_by_marker(self, params: JsonObject) -> int | None:
        found = await self.client.find_by_external_id(text_param(params, "external_id"))
        return min(int(t["id"]) for t in found) if found else None

    async def update_ticket(
        self, ticket_id: int, remote: Mapping[str, str], current: Record
    ) -> str | None:
        doc = await self.client.update_ticket(ticket_id, remote)
        stamp = (doc.get("ticket") or {}).get("updated_at")
        return stamp if isinstance(stamp, str) else None

    # Zendesk's safe_update: the PUT lands only if updated_at still is the stamp, else 409
    # UpdateConflict (../shared/reference/zendesk/NOTES.md, 2.5).
    safe_updates = True

    async def update_unchanged_since(
        self, ticket_id: int, remote: Mapping[str, str], stamp: str
    ) -> str | None:
        doc = await self.client.update_ticket(ticket_id, remote, updated_stamp=stamp)
        new = (doc.get("ticket") or {}).get("updated_at")
        return new if isinstance(new, str) else None

    async def add_note(self, ticket_id: int, params: JsonObject) -> int | None:
        doc = await self.client.add_comment(
            ticket_id, text_param(params, "body"), public=bool(params.get("public"))
        )
        for event in (doc.get("audit") or {}).get("events") or []:
            if event.get("type") == "Comment" and event.get("id") is not None:
                return int(event["id"])
        return None

    def fetched(self, ticket: Record, command: PendingCommand) -> dict[str, Any]:
        return observe.ticket_data(ticket, via="fetch", change=None)

    async def note_observations(
        self, ticket_id: int, tenant: str | None, command: PendingCommand
    ) -> list[NewEvent]:
        return [
            observe.note_event(
                tenant=tenant, ticket_id=ticket_id, comment_id=int(c["id"]),
                body=c.get("body"), public=bool(c.get("public")),
                author_id=observe.opt_int(c.get("author_id")), author_is_staff=None,
                created_at=c.get("created_at"), via="fetch",
            )
            for c in await self.client.list_comments(ticket_id)
        ]  # fmt: skip
