"""Carrying out one command on its desk, at most once in effect.

Each kind of action has one function here, written against the
:class:`~daemon.connectors.contract.Desk` contract, so no desk is named.
Creates and notes carry a marker (the SOC ticket's ``external_id``, the
ConnectWise ticket's ``externalXRef``, a marker line at the end of a mirrored
note), and when a command may already have been sent (a retry, a command
issued before this process started, or an audit repair re-sending one,
``params["reissue_of"]``) the marker is looked up first: a crash between the
remote write and its outcome event never doubles the remote effect. Status and
priority updates set a value, so repeating one is harmless; they read the
ticket first and refuse to overwrite a field someone else changed since the
decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.connectors.contract import Desk, Record, RemoteConflictError, text_param
from daemon.sync.vocabulary import note_marker
from projections.state import (
    FieldName,
    JsonObject,
    Link,
    PendingCommand,
    Side,
    as_field_name,
    as_side,
    later,
)

Result = dict[str, Any]
Desks = Mapping[Side, Desk]


class MissingTargetError(Exception):
    """The other side's ticket is not known yet (its create has not been linked)."""


def target_ticket(command: PendingCommand, link: Link) -> tuple[Side, int]:
    """The side a command acts on and that side's ticket id; :class:`MissingTargetError`
    while the link does not know that ticket yet."""
    side = command.target
    ticket_id = link.ticket_id(side)
    if ticket_id is None:
        raise MissingTargetError(f"{link.link_id} has no {side} ticket yet")
    return side, int(ticket_id)


class StaleTargetError(Exception):
    """Someone else changed the target field since the decision: do not overwrite it."""

    def __init__(self, target: Side, ticket_id: int, changed: dict[str, str]) -> None:
        self.target = target
        self.ticket_id = ticket_id
        self.changed = changed
        super().__init__(
            f"{target} ticket {ticket_id} changed since the decision ({changed}); re-read it"
        )


def accepted(command: PendingCommand) -> dict[FieldName, list[str]]:
    """Per field, the values an update's target may hold for the write to go ahead.

    Those the command was issued with, unless an echo settled the field before the
    delivery was recorded: the target was seen holding the value, so the write may
    only find it there (a no-op), never overwrite whatever came after (see
    ``projections/fold.py``, ``_echo``).
    """
    raw = command.params.get("accept")
    accept = {
        as_field_name(name): [str(v) for v in values] if isinstance(values, list) else []
        for name, values in (raw if isinstance(raw, dict) else {}).items()
    }
    writes = command.field_writes()
    for name in command.settled or ():
        if name in writes:
            accept[name] = [writes[name]]
    return accept


def stale_fields(desk: Desk, ticket: Record, command: PendingCommand) -> dict[str, str]:
    """The fields an update may not overwrite: what the ticket holds there now, when that
    is not one of the values the command accepts."""
    normalize = command.params.get("normalize")
    now = desk.field_values(ticket, normalize if isinstance(normalize, dict) else {})
    return {name: now[name] for name, ok in accepted(command).items() if now[name] not in ok}


async def deliver(command: PendingCommand, link: Link, desks: Desks, *, maybe_sent: bool) -> Result:
    """Carry out ``command`` for ``link``; return the result (``{"id": ...}`` for creates)."""
    desk = desks[command.target]
    params = command.params
    # A command re-sent by ``audit --fix``: the one it replaces may have landed.
    maybe_sent = maybe_sent or "reissue_of" in params
    if command.is_create:
        return await _create(desk, command, maybe_sent)
    _, ticket_id = target_ticket(command, link)
    if command.is_update:
        return await _update(desk, ticket_id, command, link)
    if command.action in ("add_note", "add_comment"):
        return await _note(desk, ticket_id, params, maybe_sent)
    raise ValueError(f"unknown command kind {command.kind!r}")


async def _create(desk: Desk, command: PendingCommand, maybe_sent: bool) -> Result:
    if maybe_sent:
        found = await desk.find_by_marker(command.params)
        if found is not None:
            return {"id": found, "found_by_marker": True}
    return {"id": await desk.create_ticket(command.params, idempotency_key=command.command_id)}


def unchanged_stamp(command: PendingCommand, link: Link) -> str | None:
    """The target ticket's source time as last seen, when a write conditional on it is as
    safe as reading the ticket first: what was last seen of each field it writes is a
    value the command accepts. ``None`` when not (or nothing was seen)."""
    target = command.target
    accept = accepted(command)
    for name in command.field_writes():
        if link.fields[name].side(target).value not in accept.get(name, ()):
            return None  # known changed since the decision: the read decides, as always
    stamp: str | None = None
    for f in link.fields.values():
        seen = f.side(target).seen_at
        if seen is not None and (stamp is None or later(seen, stamp) > 0):
            stamp = seen
    return stamp


async def _update(desk: Desk, ticket_id: int, command: PendingCommand, link: Link) -> Result:
    remote = command.params.get("remote")
    writes = {k: str(v) for k, v in (remote if isinstance(remote, dict) else {}).items()}
    stamp = unchanged_stamp(command, link) if desk.safe_updates else None
    if stamp is not None:
        # Unchanged since it was last seen holding accepted values: one request, not a read
        # and a write. Changed since (anything, a comment too): read and check as below.
        try:
            return {"updated_at": await desk.update_unchanged_since(ticket_id, writes, stamp)}
        except RemoteConflictError:
            pass
    current = await desk.read_ticket(ticket_id)
    changed = stale_fields(desk, current, command)
    if changed:
        raise StaleTargetError(desk.side, ticket_id, changed)
    return {"updated_at": await desk.update_ticket(ticket_id, writes, current)}


def _marker_of(params: JsonObject) -> str:
    side, ident = text_param(params, "note_key").split(":", 1)
    return note_marker(as_side(side), ident)


async def _note(desk: Desk, ticket_id: int, params: JsonObject, maybe_sent: bool) -> Result:
    marker = _marker_of(params)
    if maybe_sent:
        for note in await desk.read_notes(ticket_id):
            if marker in note.text:
                return {"id": note.id, "found_by_marker": True}
    note_id = await desk.add_note(ticket_id, params)
    if note_id is not None:
        return {"id": note_id}
    # The desk's answer did not name the note: find it by its marker.
    for note in reversed(await desk.read_notes(ticket_id)):
        if marker in note.text:
            return {"id": note.id}
    return {"id": None}
