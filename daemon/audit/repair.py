"""Repairs as decisions: one ``sync.repair.decided`` per fixed field, and the command it implies.

A repair never rewrites history: it appends a decision (why, which side wins,
what is written where) and an ``outbox.command.issued`` update in exactly the
shape sync's own decisions issue, caused by that decision, so the running
outbox delivers it like any other command. Event ids are derived from the
link, field, value and the log position the audit saw, so running the same
``--fix`` twice on the same log appends nothing the second time.
"""

from __future__ import annotations

from daemon.sync.decide import _Decision, _update
from daemon.sync.rules import Rules
from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.audit import Repair
from projections.state import BridgeState

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
            tenant=link["tenant"],
            ticket=repair.link_id,
            event_id=derived_event_id(
                "repair", repair.link_id, repair.field, repair.value, str(state.position)
            ),
            correlation_id=repair.link_id,
            source=AUDIT_SOURCE,
        )
        recorded = await store.append([decision])
        appended.extend(recorded)
        d = _Decision(recorded[0])
        _update(d, link, rules, {repair.target: (repair.field, repair.value)})
        appended.extend(await store.append(d.events))
    return appended
