"""Carrying out one command against ConnectWise or the SOC, at most once in effect.

Each kind of command has one function here. Creates and notes carry a marker
(the SOC ticket's ``external_id``, the ConnectWise ticket's ``externalXRef``,
a marker line at the end of a mirrored note), and when a command may already
have been sent (a retry, a command issued before this process started, or
an audit repair re-sending one, ``params["reissue_of"]``) the marker is
looked up first: a crash between the remote write and its
outcome event never doubles the remote effect. Status and priority updates
set a value, so repeating one is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.connectors.connectwise.client import NOTE_FLAGS, ConnectWiseClient
from daemon.connectors.connectwise.settings import NoteSection
from daemon.connectors.soc.client import SocClient
from daemon.sync.vocabulary import note_marker
from projections.state import Json, JsonObject, Link, PendingCommand, Side, as_side

Result = dict[str, Any]


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


def current_values(target: Side, ticket: Mapping[str, Any], params: JsonObject) -> dict[str, str]:
    """The target ticket's status and priority, in the SOC's vocabulary (as sync compares)."""
    if target == "soc":
        return {
            "status": "solved" if ticket.get("status") in ("solved", "closed") else "open",
            "priority": ticket.get("priority") or "normal",
        }
    norm = _object(params, "normalize")
    status = (ticket.get("status") or {}).get("name")
    priority = (ticket.get("priority") or {}).get("name")
    soc_priority = next(
        (soc for soc, cw in _object(norm, "priority_mapping").items() if cw == priority),
        _text(norm, "default_soc_priority"),
    )
    return {
        "status": "solved" if status == norm["solved_status"] else "open",
        "priority": soc_priority,
    }


def accepted(command: PendingCommand) -> dict[str, list[str]]:
    """Per field, the values an update's target may hold for the write to go ahead.

    Those the command was issued with, unless an echo settled the field before the
    delivery was recorded: the target was seen holding the value, so the write may
    only find it there (a no-op), never overwrite whatever came after (see
    ``projections/fold.py``, ``_echo``).
    """
    accept = {
        name: [str(v) for v in values] if isinstance(values, list) else []
        for name, values in _object(command.params, "accept").items()
    }
    writes = command.field_writes()
    for name in command.settled or ():
        if name in writes:
            accept[name] = [writes[name]]
    return accept


def _check_fresh(
    target: Side, ticket_id: int, ticket: Mapping[str, Any], command: PendingCommand
) -> None:
    now = current_values(target, ticket, command.params)
    changed = {name: now[name] for name, ok in accepted(command).items() if now[name] not in ok}
    if changed:
        raise StaleTargetError(target, ticket_id, changed)


async def deliver(
    command: PendingCommand,
    link: Link,
    cw: ConnectWiseClient,
    soc: SocClient,
    *,
    maybe_sent: bool,
) -> Result:
    """Carry out ``command`` for ``link``; return the result (``{"id": ...}`` for creates)."""
    kind = command.kind
    params = command.params
    # A command re-sent by ``audit --fix``: the one it replaces may have landed.
    maybe_sent = maybe_sent or "reissue_of" in params
    if kind == "soc.create_ticket":
        return await _soc_create(soc, command.command_id, params, maybe_sent)
    if kind == "cw.create_ticket":
        return await _cw_create(cw, params, maybe_sent)
    target, remote_id = target_ticket(command, link)
    if kind == "soc.update_ticket":
        _check_fresh(target, remote_id, await soc.get_ticket(remote_id), command)
        doc = await soc.update_ticket(remote_id, _object(params, "remote"))
        return {"updated_at": (doc.get("ticket") or {}).get("updated_at")}
    if kind == "cw.update_ticket":
        current = await cw.get_ticket(remote_id)
        _check_fresh(target, remote_id, current, command)
        changes = {name: {"name": value} for name, value in _object(params, "remote").items()}
        updated = await cw.update_ticket(remote_id, changes, current) or current
        return {"updated_at": (updated.get("_info") or {}).get("lastUpdated")}
    if kind == "soc.add_comment":
        return await _soc_comment(soc, remote_id, params, maybe_sent)
    if kind == "cw.add_note":
        return await _cw_note(cw, remote_id, params, maybe_sent)
    raise ValueError(f"unknown command kind {kind!r}")


async def _soc_create(
    soc: SocClient, command_id: str, params: JsonObject, maybe_sent: bool
) -> Result:
    if maybe_sent:
        found = await soc.find_by_external_id(_text(params, "external_id"))
        if found:
            return {"id": min(int(t["id"]) for t in found), "found_by_marker": True}
    ticket = await soc.create_ticket(
        subject=_text(params, "subject"),
        body=_text(params, "body"),
        organization_id=_int(params, "organization_id"),
        external_id=_text(params, "external_id"),
        priority=_text(params, "priority"),
        public=True,
        idempotency_key=command_id,
    )
    return {"id": int(ticket["id"])}


async def _cw_create(cw: ConnectWiseClient, params: JsonObject, maybe_sent: bool) -> Result:
    marker = _text(params, "external_ref")
    if maybe_sent:
        async for ticket in cw.iter_tickets(conditions=f"externalXRef = '{marker}'"):
            return {"id": int(ticket["id"]), "found_by_marker": True}
    body: dict[str, Any] = {
        "summary": params["summary"],
        "company": {"id": params["company_id"]},
        "board": {"name": params["board"]},
        "priority": {"name": params["priority"]},
        "externalXRef": marker,
    }
    if params.get("source"):
        body["source"] = {"name": params["source"]}
    ticket = await cw.create_ticket(body)
    return {"id": int(ticket["id"])}


def _marker_of(params: JsonObject) -> str:
    side, ident = _text(params, "note_key").split(":", 1)
    return note_marker(as_side(side), ident)


async def _soc_comment(
    soc: SocClient, ticket_id: int, params: JsonObject, maybe_sent: bool
) -> Result:
    marker = _marker_of(params)
    if maybe_sent:
        for comment in await soc.list_comments(ticket_id):
            if marker in (comment.get("body") or ""):
                return {"id": int(comment["id"]), "found_by_marker": True}
    doc = await soc.add_comment(ticket_id, _text(params, "body"), public=bool(params["public"]))
    for event in (doc.get("audit") or {}).get("events") or []:
        if event.get("type") == "Comment" and event.get("id") is not None:
            return {"id": int(event["id"])}
    # The audit did not name the comment: find it by its marker.
    for comment in reversed(await soc.list_comments(ticket_id)):
        if marker in (comment.get("body") or ""):
            return {"id": int(comment["id"])}
    return {"id": None}


async def _cw_note(
    cw: ConnectWiseClient, ticket_id: int, params: JsonObject, maybe_sent: bool
) -> Result:
    marker = _marker_of(params)
    if maybe_sent:
        for note in await cw.list_notes(ticket_id):
            if marker in (note.get("text") or ""):
                return {"id": int(note["id"]), "found_by_marker": True}
    note = await cw.create_note(ticket_id, _text(params, "text"), _section(params))
    return {"id": int(note["id"])}


def _object(params: JsonObject, key: str) -> dict[str, Json]:
    value = params.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"command parameter {key!r} is not an object")
    return value


def _text(params: Mapping[str, Json], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str):
        raise ValueError(f"command parameter {key!r} is not a string")
    return value


def _int(params: JsonObject, key: str) -> int:
    value = params.get(key)
    if not isinstance(value, int):
        raise ValueError(f"command parameter {key!r} is not an integer")
    return value


def _section(params: JsonObject) -> NoteSection:
    section = _text(params, "section")
    if section not in NOTE_FLAGS:
        raise ValueError(f"note section {section!r} is not one of {', '.join(NOTE_FLAGS)}")
    return section  # type: ignore[return-value]
