"""Deciding: from one input event and the folded state, the decisions and commands it implies.

``decide(state, event, rules)`` is pure: no I/O, no clock, no randomness. The
decisions come out with ids derived from the cause (see
:mod:`daemon.sync.decision`), so deciding an input again yields the very same
events. One function per kind of input, named for it below: a ConnectWise
ticket, a ConnectWise deletion, a ConnectWise note, a SOC ticket, a SOC
comment, a delivered create. Each field of a ticket is decided by the named
steps of :mod:`daemon.sync.fields`.

A ticket observation that disagrees with the known value within the same
second asks for a fetch (``{side}.fetch_ticket``); the fetch is recorded as a
fresh observation (see ``daemon/outbox/fetch.py``), which then decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from daemon.sync.decision import Decision
from daemon.sync.fields import FieldSeen, decide_field, read_again
from daemon.sync.rules import Rules, TenantRule
from daemon.sync.vocabulary import (
    CW_MARKER,
    SOC_MARKER,
    TEXT_MARKER,
    cw_external_ref,
    cw_status,
    note_marker,
    soc_external_id,
    soc_status,
)
from eventstore import NewEvent, RecordedEvent
from projections import kinds
from projections.state import BridgeState, Link, Side, as_side

Data = Mapping[str, Any]
Input = Callable[[Decision, BridgeState, Data, TenantRule, Rules], None]


def decide(state: BridgeState, event: RecordedEvent, rules: Rules) -> list[NewEvent]:
    """The decisions and commands ``event`` implies, given ``state`` folded before it."""
    if state.removed:
        return []
    handler = _INPUTS.get(event.type)
    if handler is None:
        return []
    tenant = rules.tenants.get(event.tenant or "")
    if tenant is None or not state.tenant_switches.get(tenant.name, tenant.sync_enabled):
        return []  # R9: a tenant whose sync is off is neither read nor written
    decision = Decision(event, state, rules)
    handler(decision, state, event.data, tenant, rules)
    return decision.events


def _active(link: Link | None) -> Link | None:
    return link if link is not None and link.active else None


def _fresh(data: Data) -> int | None:
    """``read_after`` of a fresh fetch (see :class:`FieldSeen`), else ``None``."""
    read_after = data.get("read_after")
    return read_after if data.get("fresh") and isinstance(read_after, int) else None


def _ticket_fields(
    d: Decision, link: Link, side: Side, data: Data, status: str, priority: str, own: bool
) -> None:
    at, fresh = data.get("updated_at"), _fresh(data)
    decide_field(d, link, FieldSeen("status", side, status, at, own, fresh))
    decide_field(d, link, FieldSeen("priority", side, priority, at, own, fresh))
    d.still(link, side, at)


def _cw_ticket(
    d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules
) -> None:
    cw_id = data["id"]
    link = state.link_for("cw", cw_id)
    if link is None:
        _cw_routed(d, state, data, tenant, rules)
        return
    if not link.active:
        return
    if rules.unlinked_status is not None and data.get("status") == rules.unlinked_status:
        d.emit(
            kinds.UNLINKED,
            link,
            {"reason": f"set to the unlinked status {rules.unlinked_status!r} in ConnectWise"},
        )
        return
    status = cw_status(rules, data.get("status"))
    priority = rules.soc_priority_for_cw(data.get("priority"))
    _ticket_fields(d, link, "cw", data, status, priority, bool(data.get("own_write")))


def _cw_routed(
    d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules
) -> None:
    """R1: a ConnectWise ticket on the integration board saved with the routing status
    gets a SOC ticket; R3: one unlinked before never does."""
    cw_id = data["id"]
    if str(cw_id) in state.unlinked:
        return  # R3: never linked again
    if str(data.get("external_ref") or "").startswith(CW_MARKER):
        return  # a ticket socbridge created for a SOC incident; linked on delivery
    if data.get("board") != rules.board or data.get("status") != rules.routing_status:
        return  # R1: only the routing status on the integration board starts a sync
    priority = rules.soc_priority_for_cw(data.get("priority"))
    link_id = f"cw:{cw_id}"
    d.emit(
        kinds.LINK_REQUESTED,
        link_id,
        {
            "tenant": tenant.name,
            "origin": "cw",
            "ticket_id": cw_id,
            "at": data.get("updated_at"),
            "fields": {
                "status": {"cw": "open", "soc": "open"},
                "priority": {"cw": priority, "soc": priority},
            },
        },
    )
    summary = data.get("summary") or f"ConnectWise ticket {cw_id}"
    d.command(
        link_id,
        "soc.create_ticket",
        {
            "organization_id": tenant.soc_organization_id,
            "subject": summary,
            "body": f"{summary}\n\n{TEXT_MARKER} ConnectWise ticket {cw_id}]",
            "priority": priority,
            "status": "open",
            "external_id": soc_external_id(cw_id),
        },
    )


def _cw_deleted(
    d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules
) -> None:
    link = _active(state.link_for("cw", data["id"]))
    if link is not None:
        d.emit(kinds.UNLINKED, link, {"reason": "deleted in ConnectWise"})


def _cw_note(d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules) -> None:
    link = _active(state.link_for("cw", data["ticket_id"]))
    if link is None:
        return
    key = f"cw:{data['id']}"
    if key in link.notes:
        return  # already mirrored, skipped or recognised
    text = data.get("text") or ""
    if data.get("own_write") or TEXT_MARKER in text:
        d.emit(kinds.ECHO_RECOGNISED, link, {"kind": "note", "note_key": key})
        return
    section = data.get("section")
    if section not in tenant.note_types_sent:
        d.emit(
            kinds.NOTE_SKIPPED,
            link,
            {"note_key": key, "reason": f"note type {section} is not sent to the SOC"},
        )
        return
    d.emit(kinds.NOTE_MIRROR_DECIDED, link, {"note_key": key, "target": "soc"})
    d.command(
        link,
        "soc.add_comment",
        {"note_key": key, "body": f"{text}\n\n{note_marker('cw', data['id'])}", "public": True},
    )


def _soc_ticket(
    d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules
) -> None:
    link = state.link_for("soc", data["id"])
    status = soc_status(data.get("status"))
    priority = data.get("priority") or "normal"
    if link is None:
        _soc_opened(d, data, tenant, rules, status, priority)
    elif link.active:
        _ticket_fields(d, link, "soc", data, status, priority, False)


def _soc_opened(
    d: Decision, data: Data, tenant: TenantRule, rules: Rules, status: str, priority: str
) -> None:
    """A SOC incident of a tenant gets a ConnectWise ticket on the integration board (R2),
    with the mapped priority (R6) and the configured source (R5)."""
    soc_id = data["id"]
    if str(data.get("external_id") or "").startswith(SOC_MARKER):
        return  # a SOC ticket socbridge created; linked on delivery
    if status == "solved":
        return  # a finished incident never seen open is not brought over
    link_id = f"soc:{soc_id}"
    d.emit(
        kinds.LINK_REQUESTED,
        link_id,
        {
            "tenant": tenant.name,
            "origin": "soc",
            "ticket_id": soc_id,
            "at": data.get("updated_at"),
            "fields": {
                "status": {"soc": status, "cw": status},
                "priority": {"soc": priority, "cw": priority},
            },
        },
    )
    d.command(
        link_id,
        "cw.create_ticket",
        {
            "company_id": tenant.cw_company_id,
            "board": rules.board,  # R2
            "summary": (data.get("subject") or f"SOC incident {soc_id}")[:100],
            "priority": rules.priority_mapping[priority],  # R6
            "source": rules.source,  # R5
            "external_ref": cw_external_ref(soc_id),
        },
    )


def _soc_comment(
    d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules
) -> None:
    link = _active(state.link_for("soc", data["ticket_id"]))
    if link is None:
        return
    key = f"soc:{data['comment_id']}"
    if key in link.notes:
        return
    body = data.get("body") or ""
    if TEXT_MARKER in body:
        d.emit(kinds.ECHO_RECOGNISED, link, {"kind": "note", "note_key": key})
        return
    d.emit(kinds.NOTE_MIRROR_DECIDED, link, {"note_key": key, "target": "cw"})
    d.command(
        link,
        "cw.add_note",
        {
            "note_key": key,
            "text": f"{body}\n\n{note_marker('soc', data['comment_id'])}",
            "section": tenant.note_type_used,  # R8
        },
    )


def _delivered(
    d: Decision, state: BridgeState, data: Data, tenant: TenantRule, rules: Rules
) -> None:
    """A delivered create links the pair; a delivered read may leave observations that
    came while it was under way awaiting one more."""
    kind = data.get("kind")
    if kind in ("cw.fetch_ticket", "soc.fetch_ticket"):
        read = _active(state.links.get(data.get("link_id", "")))
        if read is not None:
            read_again(d, read, as_side(kind.split(".", 1)[0]))
        return
    if kind not in ("soc.create_ticket", "cw.create_ticket"):
        return
    link = state.links.get(data.get("link_id", ""))
    if link is None or link.state != "requested":
        return
    result = data.get("result") or {}
    created = result.get("id")
    if created is None:
        return
    cw_id = link.cw_id if kind == "soc.create_ticket" else created
    soc_id = created if kind == "soc.create_ticket" else link.soc_id
    d.emit(kinds.LINKED, link, {"cw_id": cw_id, "soc_id": soc_id})
    if result.get("found_by_marker"):
        # The create landed before a restart and is recorded only now: replies made on
        # the new ticket meanwhile were recorded with no link to decide them. Read them
        # again (see daemon/outbox/fetch.py, fetch_notes).
        side = kind.split(".", 1)[0]
        params: dict[str, Any] = {"reason": "create found by its marker"}
        if side == "cw":
            params["api_member"] = rules.api_member
        d.command(link, f"{side}.fetch_notes", params)


_INPUTS: dict[str, Input] = {
    kinds.CW_TICKET_OBSERVED: _cw_ticket,
    kinds.CW_TICKET_DELETED: _cw_deleted,
    kinds.CW_NOTE_OBSERVED: _cw_note,
    kinds.SOC_TICKET_OBSERVED: _soc_ticket,
    kinds.SOC_COMMENT_OBSERVED: _soc_comment,
    kinds.COMMAND_DELIVERED: _delivered,
}
