"""Carrying out a fetch command: read one ticket now and record what it shows.

Source times (ConnectWise ``_info.lastUpdated``, the SOC's ``updated_at``)
have one-second resolution, so two observations of one ticket from the same
second cannot be ordered by their times. When sync meets one that disagrees
with what it knows, it decides nothing and issues a ``cw.fetch_ticket`` /
``soc.fetch_ticket`` command; this module carries it out.

A fetch is recorded as an ordinary observation in the ticket's stream
(``via: "fetch"``), always, even when it shows nothing new, with
``read_after``: the log position before the ticket was read. It is *fresh*
when nothing else was recorded in that stream between the read and the
append (checked with the stream's optimistic concurrency): then every
observation before it was recorded, so happened, before the read, and the
fetch shows the ticket as it is, at least as new as any of them. Sync takes
a fresh fetch read after the side's known value was set as the newer one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from daemon.connectors.connectwise import observe as cw_observe
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.soc import observe as soc_observe
from daemon.connectors.soc.client import SocClient
from daemon.outbox.deliver import target_ticket
from eventstore import ConcurrencyError, EventStore, NewEvent, RecordedEvent, derived_event_id
from projections.state import Link, PendingCommand, Side

#: Reads tried before the fetch is recorded as not fresh (the ticket keeps changing).
ATTEMPTS = 3


async def fetch_ticket(
    store: EventStore,
    command: PendingCommand,
    link: Link,
    cw: ConnectWiseClient,
    soc: SocClient,
) -> dict[str, Any]:
    """Read the command's ticket and append the observation; return what was recorded."""
    side, ticket_id = target_ticket(command, link)
    stream = (
        cw_observe.stream_for(ticket_id) if side == "cw" else soc_observe.ticket_stream(ticket_id)
    )
    for attempt in range(1, ATTEMPTS + 1):
        read_after = await store.last_position()
        if side == "cw":
            ticket = await cw.get_ticket(ticket_id)
        else:
            ticket = await soc.get_ticket(ticket_id)
        last = await store.last_in_stream(stream)
        if last is None or last.position <= read_after:
            event = _observation(side, ticket, command, read_after, fresh=True)
            version = last.stream_version if last is not None else 0
            try:
                await store.append([event], expected_version=version)
                return {"event_id": event.event_id, "read_after": read_after, "fresh": True}
            except ConcurrencyError:
                pass  # recorded meanwhile: not fresh
        if attempt == ATTEMPTS:
            # The ticket keeps changing: record what was read; sync asks again if needed.
            event = _observation(side, ticket, command, read_after, fresh=False)
            await store.append([event])
            return {"event_id": event.event_id, "read_after": read_after, "fresh": False}
    raise AssertionError("unreachable: the last attempt always appends")


def _observation(
    side: Side, ticket: dict[str, Any], command: PendingCommand, read_after: int, fresh: bool
) -> NewEvent:
    tenant = command.tenant
    event_id = derived_event_id(side, "fetch", command.command_id, str(read_after))
    if side == "cw":
        member = command.params.get("api_member")
        data = cw_observe.ticket_data(
            ticket, via="fetch", api_member=member if isinstance(member, str) else None
        )
        data.update(read_after=read_after, fresh=fresh, fetch=command.command_id)
        ticket_id = int(ticket["id"])
        return NewEvent(
            stream=cw_observe.stream_for(ticket_id),
            type=cw_observe.TICKET_OBSERVED,
            data=data,
            tenant=tenant,
            ticket=cw_observe.ticket_key(ticket_id),
            event_id=event_id,
            causation_id=command.command_id,
            source=cw_observe.SOURCE,
            occurred_at=data["updated_at"],
        )
    data = soc_observe.ticket_data(ticket, via="fetch", change=None)
    data.update(read_after=read_after, fresh=fresh, fetch=command.command_id)
    return NewEvent(
        stream=soc_observe.ticket_stream(int(ticket["id"])),
        type=soc_observe.TICKET_OBSERVED,
        data=data,
        tenant=tenant,
        ticket=soc_observe.ticket_ref(int(ticket["id"])),
        event_id=event_id,
        causation_id=command.command_id,
        source=soc_observe.SOURCE,
        occurred_at=data["updated_at"],
    )


async def fetch_notes(
    store: EventStore,
    command: PendingCommand,
    link: Link,
    cw: ConnectWiseClient,
    soc: SocClient,
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
    tenant = command.tenant or ""
    found: list[NewEvent] = []
    if side == "soc":
        for c in await soc.list_comments(ticket_id):
            found.append(soc_observe.comment_event(
                tenant=tenant, ticket_id=ticket_id, comment_id=int(c["id"]),
                body=c.get("body"), public=bool(c.get("public")),
                author_id=soc_observe.opt_int(c.get("author_id")), author_is_staff=None,
                created_at=c.get("created_at"), via="fetch",
            ))  # fmt: skip
    else:
        member = str(command.params.get("api_member") or "")
        for note in await cw.list_notes(ticket_id):
            found.append(cw_observe.note_event(note, ticket_id, tenant, api_member=member))
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
