"""Repairs as decisions: one ``sync.repair.decided`` per repair, and the events it implies.

A repair never rewrites history: it appends a decision (why, which side wins,
what is written where) and, caused by it, what it implies: for a field, an
``outbox.command.issued`` update in exactly the shape sync's own decisions
issue; for a command, the audit's ``outbox.command.abandoned`` closing a
stuck one and/or the command issued again (same parameters and marker, with
``reissue_of``, so the outbox looks the marker up before writing); for a
link whose partner is gone, ``sync.ticket.unlinked``; for a parked command,
the ``admin.command.retried`` that lets it go again. The running outbox
delivers the commands like any other. Event ids are derived from the repair
and the log position the audit saw, so running the same ``--fix`` twice on
the same log appends nothing the second time.
"""

from __future__ import annotations

from typing import Any

from daemon.sync.decision import Decision, issue_update
from daemon.sync.rules import Rules
from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.audit import Fix, Repair
from projections.fold import apply
from projections.state import BridgeState, PendingCommand

AUDIT_SOURCE = "socbridge.audit"


async def apply_repairs(
    store: EventStore, state: BridgeState, rules: Rules, repairs: list[Repair]
) -> list[RecordedEvent]:
    """Append each repair's decision, then its command; return everything appended."""
    appended: list[RecordedEvent] = []
    for repair in repairs:
        link = state.links[repair.link_id]
        decision = NewEvent(
            stream=f"link:{repair.link_id}",
            type=kinds.REPAIR_DECIDED,
            data={
                "link_id": repair.link_id,
                "field": repair.field,
                "target": repair.target,
                "value": repair.value,
                "reason": repair.reason,
                "audited_position": state.position,
            },
            tenant=link.tenant,
            ticket=repair.link_id,
            event_id=derived_event_id(
                "repair", repair.link_id, repair.field, repair.value, str(state.position)
            ),
            correlation_id=repair.link_id,
            source=AUDIT_SOURCE,
        )
        recorded = await store.append([decision])
        appended.extend(recorded)
        d = Decision(recorded[0], state, rules)
        issue_update(d, link, repair.target, repair.field, repair.value)
        appended.extend(await store.append(d.events))
    return appended


def retried_data(command: PendingCommand, operator: str, reason: str | None) -> dict[str, Any]:
    """The ``admin.command.retried`` of a parked command: what lets it (and its lane) go."""
    return {
        "command_id": command.command_id, "kind": command.kind, "link_id": command.link_id,
        "operator": operator, "reason": reason,
    }  # fmt: skip


def skipped_data(command: PendingCommand, operator: str, reason: str | None) -> dict[str, Any]:
    """The ``admin.command.skipped`` of a command: it is never delivered (its parameters are
    kept, so the audit can say what was dropped)."""
    return {**retried_data(command, operator, reason), "params": command.params}


def operator_event(
    command: PendingCommand, type_: str, data: dict[str, Any], source: str
) -> NewEvent:
    """An operator's event about one command (retried, skipped), on its link's outbox
    stream and caused by the command."""
    return NewEvent(
        stream=f"outbox:{command.link_id}", type=type_, data=data, tenant=command.tenant,
        ticket=command.link_id, causation_id=command.command_id,
        correlation_id=command.link_id, source=source,
    )  # fmt: skip


def fix_events(fix: Fix, state: BridgeState) -> list[NewEvent]:
    """The decision for one fix and the events it implies, all with derived ids."""
    command = fix.command
    command_id = command.command_id if command is not None else None
    link = state.links.get(fix.link_id)
    tenant = link.tenant if link is not None else command.tenant if command is not None else None
    if fix.orphan is not None:
        tenant = fix.orphan.tenant
    key = ("repair", fix.action, fix.link_id, command_id or "", str(state.position))
    decision_id = derived_event_id(*key)

    def event(stream: str, type_: str, data: dict[str, Any], n: int) -> NewEvent:
        return NewEvent(
            stream=stream, type=type_, data=data, tenant=tenant, ticket=fix.link_id,
            event_id=derived_event_id(*key, str(n)), causation_id=decision_id,
            correlation_id=fix.link_id, source=AUDIT_SOURCE,
        )  # fmt: skip

    events = [
        NewEvent(
            stream=f"link:{fix.link_id}",
            type=kinds.REPAIR_DECIDED,
            data={
                "link_id": fix.link_id,
                "repair": fix.action,
                "command_id": command_id,
                "closes": command_id if fix.close else None,
                "settles": list(fix.settles),
                "reason": fix.reason,
                "audited_position": state.position,
            },
            tenant=tenant,
            ticket=fix.link_id,
            event_id=decision_id,
            correlation_id=fix.link_id,
            source=AUDIT_SOURCE,
        )
    ]
    outbox = f"outbox:{fix.link_id}"
    if fix.close and command is not None:
        events.append(event(outbox, kinds.COMMAND_ABANDONED, {
            "command_id": command_id, "kind": command.kind, "link_id": fix.link_id,
            "reason": f"closed by audit --fix: {fix.reason}",
        }, 1))  # fmt: skip
    if fix.action == "retry" and command is not None:
        events.append(event(outbox, kinds.COMMAND_RETRIED, retried_data(
            command, operator="audit --fix", reason=fix.reason), 6))  # fmt: skip
    if fix.action == "reissue" and command is not None:
        params = {**command.params, "reissue_of": command_id}
        events.append(event(outbox, kinds.COMMAND_ISSUED, {
            "link_id": fix.link_id, "kind": command.kind, "params": params,
        }, 2))  # fmt: skip
    if fix.action == "relink" and fix.orphan is not None:
        o = fix.orphan
        origin_id = o.cw_id if o.origin == "cw" else o.soc_id
        fields = {name: {"cw": o.cw[name], "soc": o.soc[name]} for name in ("status", "priority")}
        events.append(event(f"link:{fix.link_id}", kinds.LINK_REQUESTED, {
            "link_id": fix.link_id, "tenant": o.tenant, "origin": o.origin,
            "ticket_id": origin_id, "fields": fields,
        }, 4))  # fmt: skip
        events.append(event(f"link:{fix.link_id}", kinds.LINKED, {
            "link_id": fix.link_id, "cw_id": o.cw_id, "soc_id": o.soc_id,
        }, 5))  # fmt: skip
    if fix.action == "unlink":
        events.append(event(f"link:{fix.link_id}", kinds.UNLINKED, {
            "link_id": fix.link_id, "reason": fix.reason,
        }, 3))  # fmt: skip
    return events


async def apply_fixes(
    store: EventStore, state: BridgeState, fixes: list[Fix]
) -> list[RecordedEvent]:
    """Append each fix's decision with its events (one append each: all or nothing), and
    fold them into ``state`` so the field repairs planned next see them."""
    planned = [fix_events(fix, state) for fix in fixes]  # all at the audited position
    appended: list[RecordedEvent] = []
    for events in planned:
        appended.extend(await store.append(events))
    for event in appended:
        apply(state, event)
    return appended
