"""Carrying out a fetch command: read one ticket (or its notes) now and record what it shows.

Source times (ConnectWise ``_info.lastUpdated``, the SOC's ``updated_at``)
have one-second resolution, so two observations of one ticket from the same
second cannot be ordered by their times. When sync meets one that disagrees
with what it knows, it decides nothing and issues a ``cw.fetch_ticket`` /
``soc.fetch_ticket`` command; :func:`fetch_ticket` carries it out.

A fetch is recorded as an ordinary observation in the ticket's stream
(``via: "fetch"``), always, even when it shows nothing new, with
``read_after``: the log position before the ticket was read. It is *fresh*
when nothing else was recorded in that stream between the read and the
append (checked with the stream's optimistic concurrency): then every
observation before it was recorded, so happened, before the read, and the
fetch shows the ticket as it is, at least as new as any of them. Sync takes
a fresh fetch read after the side's known value was set as the newer one.

Under a burst, fetches of many tickets of one desk are ready at once: the outbox
reads their tickets together (:func:`read_tickets`, one request for up to 100 SOC
or 200 ConnectWise tickets) and hands each fetch its ticket as its first read.
The log position is taken before that one read, so the freshness rule is the
same as for a read of one ticket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from daemon.connectors.contract import Desk, Record
from daemon.outbox.deliver import Desks, target_ticket
from eventstore import ConcurrencyError, EventStore, NewEvent, RecordedEvent, derived_event_id
from projections.state import Link, PendingCommand

#: Reads tried before the fetch is recorded as not fresh (the ticket keeps changing).
ATTEMPTS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Read:
    """A ticket as read for a fetch, and the log position taken before the read."""

    ticket: Record
    read_after: int


async def read_tickets(
    store: EventStore, desk: Desk, ticket_ids: Collection[int]
) -> dict[int, Read]:
    """The tickets of several fetches of one desk, read together; a ticket missing from the
    desk's answer is missing here too (its fetch reads it alone, and meets its 404)."""
    read_after = await store.last_position()
    tickets = await desk.read_tickets(ticket_ids)
    return {ticket_id: Read(ticket, read_after) for ticket_id, ticket in tickets.items()}


async def fetch_ticket(
    store: EventStore, command: PendingCommand, link: Link, desks: Desks, first: Read | None = None
) -> dict[str, Any]:
    """Read the command's ticket and append the observation; return what was recorded.

    ``first``: the ticket already read with others (:func:`read_tickets`), taken as the
    first attempt's read; attempts after it read the ticket alone.
    """
    side, ticket_id = target_ticket(command, link)
    desk = desks[side]
    stream = desk.stream_for(ticket_id)
    for attempt in range(1, ATTEMPTS + 1):
        if attempt == 1 and first is not None:
            read_after, ticket = first.read_after, first.ticket
        else:
            read_after = await store.last_position()
            ticket = await desk.read_ticket(ticket_id)
        last = await store.last_in_stream(stream)
        fresh = last is None or last.position <= read_after
        event_id = derived_event_id(side, "fetch", command.command_id, str(read_after))
        if fresh:
            event = _observation(desk, ticket, command, event_id, read_after, fresh=True)
            version = last.stream_version if last is not None else 0
            try:
                await store.append([event], expected_version=version)
                return {"event_id": event.event_id, "read_after": read_after, "fresh": True}
            except ConcurrencyError:
                pass  # recorded meanwhile: not fresh
        if attempt == ATTEMPTS:
            # The ticket keeps changing: record what was read; sync asks again if needed.
            event = _observation(desk, ticket, command, event_id, read_after, fresh=False)
            await store.append([event])
            return {"event_id": event.event_id, "read_after": read_after, "fresh": False}
    raise AssertionError("unreachable: the last attempt always appends")


def _observation(
    desk: Desk, ticket: Record, command: PendingCommand, event_id: str, read_after: int,
    *, fresh: bool,
) -> NewEvent:  # fmt: skip
    """The read as an observation, caused by its fetch command."""
    data = desk.fetched(ticket, command)
    data.update(read_after=read_after, fresh=fresh, fetch=command.command_id)
    event = desk.ticket_event(
        tenant=command.tenant, data=data, event_id=event_id, occurred_at=data["updated_at"]
    )
    return dataclasses.replace(event, causation_id=command.command_id)


async def fetch_notes(
    store: EventStore, command: PendingCommand, link: Link, desks: Desks
) -> dict[str, Any]:
    """Record every note (ConnectWise) or comment (SOC) of a ticket socbridge created, again.

    Issued when a create's delivery was found by its marker after a restart: the
    create landed before the kill, so a person may have replied on the new ticket,
    and intake recorded the reply, before the link was. Sync decided nothing on
    that reply then (no link knew the ticket). Recorded again now, under ids of
    this command, it is decided with the link in place; notes already mirrored or
    recognised are skipped by sync.
    """
    side, ticket_id = target_ticket(command, link)
    found = await desks[side].note_observations(ticket_id, command.tenant, command)
    events = [
        dataclasses.replace(
            e,
            event_id=derived_event_id(side, "fetch-notes", command.command_id, str(n)),
            causation_id=command.command_id,
        )
        for n, e in enumerate(found)
    ]
    recorded: list[RecordedEvent] = await store.append(events) if events else []
    return {"recorded": len(recorded)}
