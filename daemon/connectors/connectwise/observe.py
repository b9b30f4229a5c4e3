"""Normalising ConnectWise records into observation events.

Intake (callbacks) and the poller both turn what ConnectWise says into the
same observation shape, so sync sees one vocabulary whatever the path: stream
``cw:ticket:{id}``, ticket ``cw:{id}``, types ``connectwise.ticket.observed``,
``connectwise.note.observed``, ``connectwise.ticket.deleted``. ``data`` holds
the fields sync needs, plus ``via`` (``callback`` / ``poll``) and
``own_write`` (the writer is socbridge's API member: a possible echo; sync
decides what to do with it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from daemon.connectors import desk
from daemon.connectors.connectwise.client import note_section
from daemon.connectors.polling import digest
from eventstore import EventStore, NewEvent, derived_event_id
from projections import kinds

SOURCE = "connectwise"


def stream_for(ticket_id: int) -> str:
    return desk.stream_for("cw", ticket_id)


def ticket_key(ticket_id: int) -> str:
    return desk.ticket_key("cw", ticket_id)


# Decoded JSON objects are dicts: checked first, as ``isinstance(x, Mapping)`` (an ABC
# check) costs several times more, a dozen times per observation.


def _is_map(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _map(value: Any) -> Mapping[str, Any]:
    return value if _is_map(value) else {}


def _name(ref: Any) -> str | None:
    return ref.get("name") if _is_map(ref) else None


def _id(ref: Any) -> int | None:
    value = ref.get("id") if _is_map(ref) else None
    return value if isinstance(value, int) else None


def ticket_data(
    ticket: Mapping[str, Any], *, via: str, api_member: str | None, writer: str | None = None
) -> dict[str, Any]:
    """The observation ``data`` of a ConnectWise ticket."""
    info = _map(ticket.get("_info"))
    company = _map(ticket.get("company"))
    updated_by = writer or info.get("updatedBy")
    return {
        "id": ticket["id"],
        "summary": ticket.get("summary"),
        "status": _name(ticket.get("status")),
        "status_id": _id(ticket.get("status")),
        "closed": bool(ticket.get("closedFlag")),
        "priority": _name(ticket.get("priority")),
        "priority_id": _id(ticket.get("priority")),
        "board": _name(ticket.get("board")),
        "board_id": _id(ticket.get("board")),
        "company_id": _id(company),
        "company_identifier": company.get("identifier"),
        "company_name": company.get("name"),
        "source": _name(ticket.get("source")),
        "owner": _map(ticket.get("owner")).get("identifier"),
        "external_ref": ticket.get("externalXRef"),
        "record_type": ticket.get("recordType"),
        "entered_at": info.get("dateEntered"),
        "updated_at": info.get("lastUpdated"),
        "updated_by": updated_by,
        "own_write": api_member is not None and updated_by == api_member,
        "via": via,
    }


#: A ``connectwise.ticket.observed`` event carrying ``data`` (see :func:`ticket_data`).
ticket_event = functools.partial(desk.ticket_observation, "cw", kinds.CW_TICKET_OBSERVED, SOURCE)


def note_data(
    note: Mapping[str, Any], ticket_id: int, *, via: str, api_member: str
) -> dict[str, Any]:
    """The observation ``data`` of a ConnectWise ticket note."""
    info = _map(note.get("_info"))
    member = _map(note.get("member"))
    author = member.get("identifier") or note.get("createdBy")
    return {
        "id": note["id"],
        "ticket_id": int(ticket_id),
        "text": note.get("text"),
        "section": note_section(note),
        "internal": bool(note.get("internalFlag")),
        "external": bool(note.get("externalFlag")),
        "author": author,
        "contact": _name(note.get("contact")),
        "created_at": note.get("dateCreated"),
        "updated_at": info.get("lastUpdated"),
        "own_write": author == api_member,
        "via": via,
    }


def note_event(
    note: Mapping[str, Any], ticket_id: int, tenant: str | None, *, api_member: str
) -> NewEvent:
    data = note_data(note, ticket_id, via="poll", api_member=api_member)
    event_id = derived_event_id(
        "connectwise", "note", str(ticket_id), str(note["id"]), str(data["updated_at"]),
        digest(data),
    )  # fmt: skip
    return desk.observation(
        "cw", kinds.CW_NOTE_OBSERVED, ticket_id, data, tenant=tenant, event_id=event_id,
        source=SOURCE, occurred_at=data["updated_at"] or data["created_at"],
    )  # fmt: skip


async def known_tenant(store: EventStore, ticket_id: int) -> str | None:
    """The tenant of a ticket socbridge has observed before (``None`` if never)."""
    last = await store.last_in_stream(stream_for(ticket_id))
    return last.tenant if last is not None else None


async def route_ticket(
    store: EventStore, board: str, tenants: Mapping[int, str], ticket: Mapping[str, Any]
) -> tuple[str | None, str]:
    """``(tenant, why)`` for a ticket: the tenant to record it under, or ``None``
    with the reason to ignore it.

    A ticket of a tenant's company on the integration board is recorded. A
    ticket socbridge has recorded before stays recorded under its tenant even
    after it moves to another board or company (sync must see that). Anything
    else (other customers' tickets, other boards) is ignored: it is not ours.
    """
    company = ticket.get("company")
    company_id = _id(company)
    board_name = _name(ticket.get("board"))
    tenant = tenants.get(company_id) if isinstance(company_id, int) else None
    on_board = isinstance(board_name, str) and board_name.casefold() == board.casefold()
    if tenant is not None and on_board:
        return tenant, "tenant"
    previous = await known_tenant(store, int(ticket["id"]))
    if previous is not None:
        return previous, "known"
    return None, "not_a_tenant" if tenant is None else "not_on_board"
