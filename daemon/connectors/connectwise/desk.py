"""ConnectWise as a :class:`~daemon.connectors.contract.Desk`: what the outbox asks of it.

Creates carry the marker ``externalXRef = socbridge:soc:{id}`` and are found
by it (``conditions=externalXRef = '...'``); updates are JSON-Patch of only
the fields that differ, references by name (``{"status": {"name": ...}}``,
../shared/reference/connectwise/NOTES.md §3.1-3.2); notes go in exactly one
section (§3.3). Values are compared in the SOC's vocabulary through the
mapping the command carries (``normalize``), so a reload between the decision
and its delivery does not change what the check compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.connectors.connectwise import observe
from daemon.connectors.connectwise.client import NOTE_FLAGS, ConnectWiseClient
from daemon.connectors.connectwise.settings import NoteSection
from daemon.connectors.contract import Note, Record, text_param
from daemon.connectors.desk import BaseDesk
from eventstore import NewEvent
from projections import kinds
from projections.state import FieldName, JsonObject, PendingCommand


class ConnectWiseDesk(BaseDesk):
    """The outbox's view of ConnectWise (see the contract for each method)."""

    side = "cw"
    observed_type = kinds.CW_TICKET_OBSERVED
    source = observe.SOURCE
    client: ConnectWiseClient

    @staticmethod
    def field_values(ticket: Record, normalize: JsonObject) -> dict[FieldName, str]:
        """A ConnectWise ticket's status and priority in the SOC's vocabulary, through the
        mapping an update command carries (R6, R7)."""
        status = (ticket.get("status") or {}).get("name")
        priority = (ticket.get("priority") or {}).get("name")
        mapping = normalize.get("priority_mapping")
        soc_priority = next(
            (soc for soc, cw in (mapping if isinstance(mapping, dict) else {}).items()
             if cw == priority),
            str(normalize.get("default_soc_priority")),
        )  # fmt: skip
        return {
            "status": "solved" if status == normalize.get("solved_status") else "open",
            "priority": soc_priority,
        }

    async def read_notes(self, ticket_id: int) -> list[Note]:
        notes = await self.client.list_notes(ticket_id)
        return [Note(int(n["id"]), str(n.get("text") or "")) for n in notes]

    async def create_ticket(self, params: JsonObject, *, idempotency_key: str) -> int:
        # ConnectWise has no idempotency key: the marker, looked up first after an
        # ambiguous attempt (find_by_marker), keeps the create single.
        body: dict[str, Any] = {
            "summary": params["summary"],
            "company": {"id": params["company_id"]},
            "board": {"name": params["board"]},
            "priority": {"name": params["priority"]},
            "externalXRef": params["external_ref"],
        }
        if params.get("source"):
            body["source"] = {"name": params["source"]}
        ticket = await self.client.create_ticket(body)
        return int(ticket["id"])

    async def find_by_marker(self, params: JsonObject) -> int | None:
        marker = text_param(params, "external_ref")
        async for ticket in self.client.iter_tickets(conditions=f"externalXRef = '{marker}'"):
            return int(ticket["id"])
        return None

    async def update_ticket(
        self, ticket_id: int, remote: Mapping[str, str], current: Record
    ) -> str | None:
        changes = {name: {"name": value} for name, value in remote.items()}
        updated = await self.client.update_ticket(ticket_id, changes, current) or current
        stamp = (updated.get("_info") or {}).get("lastUpdated")
        return stamp if isinstance(stamp, str) else None

    async def add_note(self, ticket_id: int, params: JsonObject) -> int | None:
        text = text_param(params, "text")
        note = await self.client.create_note(ticket_id, text, _section(params))
        return int(note["id"])

    def fetched(self, ticket: Record, command: PendingCommand) -> dict[str, Any]:
        member = command.params.get("api_member")
        return observe.ticket_data(
            ticket, via="fetch", api_member=member if isinstance(member, str) else None
        )

    async def note_observations(
        self, ticket_id: int, tenant: str | None, command: PendingCommand
    ) -> list[NewEvent]:
        member = str(command.params.get("api_member") or "")
        notes = await self.client.list_notes(ticket_id)
        return [observe.note_event(n, ticket_id, tenant, api_member=member) for n in notes]


def _section(params: JsonObject) -> NoteSection:
    section = text_param(params, "section")
    for name in NOTE_FLAGS:
        if name == section:
            return name
    raise ValueError(f"note section {section!r} is not one of {', '.join(NOTE_FLAGS)}")
