"""What one input implies, collected: decision events and the commands they issue.

A :class:`Decision` gathers the events one input (an observation, a delivered
create, or an audit repair) implies. Their ids are derived from the cause's id
and their index, so deciding the same input again (after a crash, or in a
replay) yields the very same events, and appending them again writes nothing.
"""

from __future__ import annotations

from typing import Any

from daemon.sync.rules import Rules
from daemon.sync.vocabulary import remote_value
from eventstore import NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.state import BridgeState, FieldName, Link, Side


class Decision:
    """Collects the events one input implies, with derived ids and the cause attached."""

    def __init__(self, cause: RecordedEvent, state: BridgeState, rules: Rules) -> None:
        self.cause = cause
        self.state = state
        self.rules = rules
        self.events: list[NewEvent] = []
        #: Sides a fetch was asked of by this input (one read answers every field).
        self.fetching: set[Side] = set()
        #: Fields this newer observation shows unchanged (see :meth:`still`).
        self.unchanged: list[FieldName] = []

    def emit(self, type_: str, link: Link | str, data: dict[str, Any]) -> str:
        link_id = link if isinstance(link, str) else link.link_id
        tenant = self.cause.tenant if isinstance(link, str) else link.tenant
        event_id = derived_event_id("sync", self.cause.event_id, str(len(self.events)))
        stream = f"outbox:{link_id}" if type_ == kinds.COMMAND_ISSUED else f"link:{link_id}"
        self.events.append(
            NewEvent(
                stream=stream,
                type=type_,
                data={"link_id": link_id, **data},
                tenant=tenant,
                ticket=link_id,
                event_id=event_id,
                causation_id=self.cause.event_id,
                correlation_id=self.cause.correlation_id or link_id,
                source=kinds.SYNC_SOURCE,
                occurred_at=self.cause.occurred_at,
            )
        )
        return event_id

    def command(self, link: Link | str, kind: str, params: dict[str, Any]) -> str:
        return self.emit(kinds.COMMAND_ISSUED, link, {"kind": kind, "params": params})

    def still(self, link: Link, side: Side, at: str | None) -> None:
        """Record that the fields in :attr:`unchanged` still held their value at ``at``, so a
        late observation from an earlier second is known to be stale."""
        if self.unchanged:
            self.emit(
                kinds.OBSERVATION_IGNORED,
                link,
                {"reason": "unchanged", "side": side, "at": at, "fields": self.unchanged},
            )


def issue_update(
    d: Decision,
    link: Link,
    target: Side,
    name: FieldName,
    value: str,
    seen: tuple[Side, str] | None = None,
) -> None:
    """An update command writing ``value`` to field ``name`` of ``target``'s ticket.

    ``accept`` lists the values the target may hold when the command is delivered
    without anyone else having touched it (what we last knew, or one of our own
    writes before this one). The outbox reads the ticket first and, if the field
    holds anything else, does not overwrite it blindly: the change is re-read and
    decided again (a conflict, usually).

    ``seen`` is ``(side, value)`` of the observation being decided: a conflict lost by
    that side writes back to it, and the value it was just seen holding is not folded
    into ``link`` yet, but is one the write may overwrite.
    """
    rules = d.rules
    s = link.fields[name].side(target)
    known = [s.value] if s.value is not None else []
    if seen is not None and seen[0] == target:
        known.append(seen[1])
    params: dict[str, Any] = {
        "fields": {name: value},
        "remote": remote_value(rules, target, name, value),
        # Each value once: with many writes in flight the list would otherwise repeat
        # the field's few values once per write, in every command and its event.
        "accept": {name: list(dict.fromkeys([*known, *s.expected_values, value]))},
    }
    if target == "cw":
        params["normalize"] = {
            "solved_status": rules.solved_status,
            "priority_mapping": dict(rules.priority_mapping),
            "default_soc_priority": rules.default_soc_priority,
        }
    d.command(link, f"{target}.update_ticket", params)
