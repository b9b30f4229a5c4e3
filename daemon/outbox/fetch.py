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
carries them out together (:func:`fetch_tickets`). Each attempt reads the tickets
still to record with one request (up to 100 SOC or 200 ConnectWise tickets), the
log position taken before it, and records each as a fetch of one ticket does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from daemon.connectors.contract import Desk, Record
from daemon.outbox.deliver import Desks, target_ticket
from eventstore import ConcurrencyError, EventStore, NewEvent, RecordedEvent, derived_event_id
from projections.state import Link, PendingCommand

#: Reads tried before the fetch is recorded as not fresh (the ticket keeps changing).
ATTEMPTS = 3


async def fetch_ticket(
    store: EventStore, command: PendingCommand, link: Link, desks: Desks
) -> dict[str, Any]:
    """Read the command's ticket and append the observation; return what was recorded."""
    side, ticket_id = target_ticket(command, link)
    desk = desks[side]
    for attempt in range(1, ATTEMPTS + 1):
        read_after = await store.last_position()
        ticket = await desk.read_ticket(ticket_id)
        recorded = await _record(store, desk, command, ticket, read_after, attempt)
        if recorded is not None:
            return recorded
    raise AssertionError("unreachable: the last attempt always records")


@dataclasses.dataclass(eq=False)
class Fetch:
    """One of several fetches of one desk carried out together, and what it recorded."""

    command: PendingCommand
    ticket_id: int
    #: As :func:`fetch_ticket` returns it; ``None`` until recorded, and for a ticket the
    #: desk's answer lacked (gone: its fetch is for reading alone, to meet its 404).
    recorded: dict[str, Any] | None = None


async def fetch_tickets(store: EventStore, desk: Desk, fetches: list[Fetch]) -> None:
    """Carry out ``fetches`` (all of ``desk``) together: each attempt reads the tickets not
    recorded yet in one go (``read_after`` taken before that read), then records each as
    :func:`fetch_ticket` does. What a read raises propagates; fetches recorded before it
    keep what they recorded."""
    todo = fetches
    for attempt in range(1, ATTEMPTS + 1):
        read_after = await store.last_position()
        tickets = await desk.read_tickets({f.ticket_id for f in todo})
        todo = [f for f in todo if f.ticket_id in tickets]
        for f in todo:
            ticket = tickets[f.ticket_id]
            f.recorded = await _record(store, desk, f.command, ticket, read_after, attempt)
        todo = [f for f in todo if f.recorded is None]
        if not todo:
            return


async def _record(
    store: EventStore, desk: Desk, command: PendingCommand, ticket: Record, read_after: int,
    attempt: int,
) -> dict[str, Any] | None:  # fmt: skip
    """Append the read as the command's observation, fresh if nothing was recorded of the
    ticket since ``read_after``; what was recorded, or ``None`` (not fresh) while attempts
    remain. The last attempt records what it read, fresh or not: the ticket keeps changing,
    and sync asks again if it needs to."""
    stream = desk.stream_for(int(ticket["id"]))
    last = await store.last_in_stream(stream)
    fresh = last is None or last.position <= read_after
    event_id = derived_event_id(desk.side, "fetch", command.command_id, str(read_after))
    if fresh:
        event = _observation(desk, ticket, command, event_id, read_after, fresh=True)
        version = last.stream_version if last is not None else 0
        try:
            await store.append([event], expected_version=version)
            return {"event_id": event.event_id, "read_after": read_after, "fresh": True}
        except ConcurrencyError:
            pass  # recorded meanwhile: not fresh
    if attempt < ATTEMPTS:
        return None
    event = _observation(desk, ticket, command, event_id, read_after, fresh=False)
    await store.append([event])
    return {"event_id": event.event_id, "read_after": read_after, "fresh": False}


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
