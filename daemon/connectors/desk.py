"""What both desks' adapters share: where a ticket's observations go, and the desk base.

Every desk records what it says of a ticket in stream ``{side}:ticket:{id}``
under ticket key ``{side}:{id}``; :func:`observation` builds such an event.
:class:`BaseDesk` holds what every :class:`~daemon.connectors.contract.Desk`
implements alike (its client, reading a ticket, its stream); each desk's
``desk.py`` adds what its API does differently.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from daemon.connectors.contract import Record
from daemon.connectors.remote import RemoteClient
from eventstore import NewEvent
from projections.state import Side


def stream_for(side: Side, ticket_id: int) -> str:
    """The stream of a desk's ticket: every observation of it, whichever path made it."""
    return f"{side}:ticket:{int(ticket_id)}"


def ticket_key(side: Side, ticket_id: int) -> str:
    """The ticket key events of a desk's ticket carry (``events --ticket`` finds them by it)."""
    return f"{side}:{int(ticket_id)}"


def observation(
    side: Side,
    type_: str,
    ticket_id: int,
    data: Mapping[str, Any],
    *,
    tenant: str | None,
    event_id: str,
    source: str,
    occurred_at: str | None,
) -> NewEvent:
    """An observation of ticket ``ticket_id`` of ``side``, in that ticket's stream."""
    return NewEvent(
        stream=stream_for(side, ticket_id),
        type=type_,
        data=data,
        tenant=tenant,
        ticket=ticket_key(side, ticket_id),
        event_id=event_id,
        source=source,
        occurred_at=occurred_at,
    )


def ticket_observation(
    side: Side,
    type_: str,
    source: str,
    *,
    tenant: str | None,
    data: Mapping[str, Any],
    event_id: str,
    occurred_at: str | None,
) -> NewEvent:
    """The observation of a ticket whose normalised ``data`` carries its ``id``."""
    return observation(
        side, type_, int(data["id"]), data,
        tenant=tenant, event_id=event_id, source=source, occurred_at=occurred_at,
    )  # fmt: skip


class TicketReader(Protocol):
    remote: RemoteClient

    async def get_ticket(self, ticket_id: int) -> dict[str, Any]: ...

    async def get_tickets(self, ticket_ids: Iterable[int]) -> list[dict[str, Any]]: ...


class BaseDesk:
    """The parts of a desk adapter that are the same on every desk."""

    side: ClassVar[Side]
    #: The type of its ticket observations, and the ``source`` they carry.
    observed_type: ClassVar[str]
    source: ClassVar[str]

    #: Whether the desk writes a ticket only if unchanged since a source time (the SOC's
    #: ``safe_update``); ConnectWise's API has no such condition.
    safe_updates = False

    def __init__(self, client: TicketReader) -> None:
        self.client = client

    async def update_unchanged_since(
        self, ticket_id: int, remote: Mapping[str, str], stamp: str
    ) -> str | None:
        raise NotImplementedError(f"the {self.side} desk has no conditional update")

    async def read_ticket(self, ticket_id: int) -> Record:
        return await self.client.get_ticket(ticket_id)

    async def room(self) -> None:
        await self.client.remote.room()

    async def read_tickets(self, ticket_ids: Collection[int]) -> dict[int, Record]:
        return {int(t["id"]): t for t in await self.client.get_tickets(ticket_ids)}

    def stream_for(self, ticket_id: int) -> str:
        return stream_for(self.side, ticket_id)

    def ticket_event(
        self, *, tenant: str | None, data: Mapping[str, Any], event_id: str,
        occurred_at: str | None,
    ) -> NewEvent:  # fmt: skip
        return ticket_observation(
            self.side, self.observed_type, self.source,
            tenant=tenant, data=data, event_id=event_id, occurred_at=occurred_at,
        )  # fmt: skip
