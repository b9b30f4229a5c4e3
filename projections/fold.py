"""The fold: ``apply(state, event) -> state``, for every event that changes the read model.

Observations change nothing here: what they mean is decided by sync, and
its decisions are the events folded (an ignored observation too, when it
showed fields unchanged as of a newer source time). Outcomes of the outbox and admin facts
are folded too. The fold does no I/O and reads no clock, so folding the same
log always gives the same state, live or rebuilt from position 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from eventstore import RecordedEvent
from projections import kinds
from projections.state import (
    ECHO,
    PENDING,
    AbandonedCommand,
    BridgeState,
    ExpectedWrite,
    FieldState,
    Link,
    NoteMirror,
    Parked,
    PendingCommand,
    Side,
    SideState,
    as_field_name,
    as_side,
    other,
)

Handler = Callable[[BridgeState, RecordedEvent, Mapping[str, Any]], None]


def apply(state: BridgeState, event: RecordedEvent) -> BridgeState:
    """Fold one event into ``state`` (in place) and return it."""
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(state, event, event.data)
        # Every event that changes a link names it (decisions, commands and outcomes alike).
        link_id = event.data.get("link_id")
        if link_id is not None:
            state.touched.add(link_id)
    state.position = event.position
    return state


def fold(events: Iterable[RecordedEvent], state: BridgeState | None = None) -> BridgeState:
    """Fold ``events`` in order, from ``state`` or from empty."""
    state = state if state is not None else BridgeState()
    for event in events:
        apply(state, event)
    return state


def _field(state: BridgeState, d: Mapping[str, Any]) -> FieldState:
    return state.links[d["link_id"]].fields[as_field_name(d["field"])]


def _known(s: SideState, event: RecordedEvent) -> None:
    """The side's value is known as of here: a fetch read before this position cannot tell
    whether it is newer than that value (same-second source times)."""
    s.known_at = event.position


# --------------------------------------------------------------------- decisions


def _link_requested(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    origin = as_side(d["origin"])
    created = other(origin)
    link = Link(d["link_id"], d["tenant"], origin, requested_at=event.position)
    link.set_ticket_id(origin, d["ticket_id"])
    for name, values in d["fields"].items():
        f = link.fields[as_field_name(name)] = FieldState()
        mine = f.side(origin)
        mine.value = values[origin]
        # The ticket to create is expected to hold this (no command id: the create's
        # delivery links the pair and settles it, see _linked).
        f.side(created).expected = [ExpectedWrite(values[created], None)]
        # The origin's value is known as of this source time: a late observation from
        # the same second that disagrees with it is ambiguous, not a change.
        mine.saw(d.get("at"))
        _known(mine, event)
    state.links[link.link_id] = link
    index = state.by_cw if origin == "cw" else state.by_soc
    index[str(d["ticket_id"])] = link.link_id


def _linked(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    link = state.links[d["link_id"]]
    link.cw_id, link.soc_id = d["cw_id"], d["soc_id"]
    link.state = "linked"
    link.linked_at = event.position
    state.by_cw[str(d["cw_id"])] = link.link_id
    state.by_soc[str(d["soc_id"])] = link.link_id
    created = other(link.origin)
    for f in link.fields.values():
        theirs = f.side(created)
        if theirs.expected:
            # The created ticket holds what it was created with.
            theirs.value = theirs.expected[0].value
            theirs.ours = True
            theirs.expected = []
        f.agree()


def _unlinked(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    link = state.links[d["link_id"]]
    link.state = "unlinked"
    link.unlinked_at = event.position
    link.unlinked_reason = d["reason"]
    if link.cw_id is not None:
        state.unlinked[str(link.cw_id)] = event.position


def _field_decided(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    f = _field(state, d)
    s = f.side(as_side(d["side"]))
    s.value = d["value"]
    s.changed_at = d["at"]
    s.ours = False
    s.saw(d["at"])
    _known(s, event)
    # The writes it implies are expected from their commands (see _issued), which the
    # decision's batch holds right after it.
    f.agree()


def _conflict_resolved(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    _field_decided(state, event, d)
    state.conflicts += 1


def _echo(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    link = state.links.get(d["link_id"])
    if link is None:
        return
    if d["kind"] != "field":
        note = d.get("mirror_of")
        link.notes.setdefault(d["note_key"], NoteMirror("mirrored", partner=note) if note else ECHO)
        return
    if d.get("repeat"):
        return  # the known value seen again: it confirms no write still in flight
    f = _field(state, d)
    s = f.side(as_side(d["side"]))
    s.value = d["value"]
    s.ours = True
    s.saw(d.get("at"))
    _known(s, event)
    i = s.expects(d["value"])
    if i is not None:
        # Writes land in order: this one and every earlier one have come back.
        for write in s.expected[: i + 1]:
            command = state.outbox.get(write.command_id or "")
            if command is not None:
                # Settled by what the side was seen holding, yet not delivered (it may
                # have landed before its outcome was recorded, or the value seen was a
                # person's): it may no longer overwrite anything else.
                settled = command.settled if command.settled is not None else []
                if d["field"] not in settled:
                    settled.append(as_field_name(d["field"]))
                command.settled = settled
        s.landed_through(i)
    f.agree()


def _ignored(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    link = state.links.get(d["link_id"])
    if link is not None and d.get("reason") == "ambiguous":
        # Answered by a read that starts after it (logs from before ``seen_position``
        # was recorded: the decision's own position, just after).
        side = as_side(d["side"])
        seen = d.get("seen_position", event.position)
        link.awaiting_read[side] = max(link.awaiting_read.get(side, seen), seen)
    if link is not None and d.get("reason") == "unchanged":
        # A newer observation showed these fields unchanged: known as of its source time.
        side = as_side(d["side"])
        for name in d["fields"]:
            s = link.fields[as_field_name(name)].side(side)
            s.saw(d["at"])
            _known(s, event)


def _observed(side: Side) -> Handler:
    def fold(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
        read_after = d.get("read_after")
        if not d.get("fresh") or not isinstance(read_after, int):
            return
        link = state.link_for(side, d["id"])
        # A fresh read that started after the ambiguous observations answers them all.
        if link is not None and link.awaiting_read.get(side, read_after + 1) <= read_after:
            del link.awaiting_read[side]
            state.touched.add(link.link_id)  # the event names no link: see apply

    return fold


def _note_decided(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    state.links[d["link_id"]].notes[d["note_key"]] = PENDING


def _note_skipped(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    state.links[d["link_id"]].notes[d["note_key"]] = NoteMirror("skipped", reason=d["reason"])


# --------------------------------------------------------------------- commands


def _issued(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    command = PendingCommand(
        command_id=event.event_id,
        kind=d["kind"],
        link_id=d["link_id"],
        tenant=event.tenant,
        params=d["params"],
        issued_at=event.position,
    )
    link = state.links.get(command.link_id)
    if link is not None and command.is_update:
        # A write (decided by sync, an audit repair, or a command sent again): expected
        # back from the target, and known by its command id until it lands.
        for name, value in command.field_writes().items():
            s = link.fields[name].side(command.target)
            s.expected.append(ExpectedWrite(value, event.event_id))
            # The last few values written to a side: a late (retried or reordered)
            # callback of an older own write still carries one of them.
            s.remember_written(value)
    state.outbox[event.event_id] = command


def _delivered(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    command = state.outbox.pop(d["command_id"], None)
    if command is None:
        return
    link = state.links.get(command.link_id)
    if link is None:
        return
    result = d.get("result") or {}
    target = command.target
    if command.is_update:
        for name, value in command.field_writes().items():
            f = link.fields[name]
            s = f.side(target)
            s.value = value
            s.ours = True
            i = s.expected_command(command.command_id)
            if i is not None:
                # Delivered: this write and every earlier one to this side have landed.
                s.landed_through(i)
            else:
                # Writes loaded from rows that carry no command ids: by value. (When
                # the id is gone, an echo has settled this write already, and a later
                # write of the same value is still in flight.)
                j = s.expects(value)
                if j is not None and s.expected[j].command_id is None:
                    s.landed_through(j)
            s.saw(result.get("updated_at"))
            _known(s, event)
            f.agree()
    elif command.action in ("add_comment", "add_note") and result.get("id") is not None:
        created = f"{target}:{result['id']}"
        note_key = str(command.params["note_key"])
        link.notes[created] = NoteMirror("mirrored", partner=note_key)
        link.notes[note_key] = NoteMirror("mirrored", partner=created)


def _failed(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    command = state.outbox.get(d["command_id"])
    if command is not None:
        command.attempts = d["attempt"]
        command.last_error = d["error"]


def _parked(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    command = state.outbox.get(d["command_id"])
    if command is not None:
        command.attempts = d["attempt"]
        command.last_error = d["reason"]
        command.parked = Parked(d["remote_status"], d["reason"], event.position)


def _retried(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    command = state.outbox.get(d["command_id"])
    if command is not None:
        command.parked = None


def _dropped(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    # Never sent, and not a finding for the audit to repair: superseded (a later command
    # of its lane writes its fields or reads its ticket) or skipped by the operator.
    command = state.outbox.pop(d["command_id"], None)
    if command is not None:
        _never_written(state, command)


def _abandoned(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    command = state.outbox.pop(d["command_id"], None)
    if command is None:
        return
    _never_written(state, command)
    state.abandoned[command.command_id] = AbandonedCommand(command, d["reason"], event.position)


def _never_written(state: BridgeState, command: PendingCommand) -> None:
    link = state.links.get(command.link_id)
    if link is not None and command.is_update:
        # The value was never written: it will not come back as an echo.
        for name, value in command.field_writes().items():
            s = link.fields[name].side(command.target)
            i = s.expected_command(command.command_id)
            if i is not None:
                del s.expected[i]
            # Nor was it written there: an observation showing it is not our echo.
            s.forget_written(value)


# --------------------------------------------------------------------- admin facts


def _tenant_switch(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    # The operator's switch overrides the config's sync_enabled until the config changes it.
    state.tenant_switches[d["tenant"]] = event.type == kinds.TENANT_SYNC_ENABLED


def _removed(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    state.removed = True


def _config(state: BridgeState, event: RecordedEvent, d: Mapping[str, Any]) -> None:
    state.config_hash = d["hash"]
    # The latest word wins: a config that changes a tenant's sync_enabled (or adds the
    # tenant) replaces the operator's switch for it.
    for tenant in d.get("sync_reset", ()):
        state.tenant_switches.pop(tenant, None)
    # A config applied at start after removal re-installs the integration; a reload
    # does not (the hooks are installed at start only).
    if d.get("reason", "start") == "start":
        state.removed = False


_HANDLERS: dict[str, Handler] = {
    kinds.LINK_REQUESTED: _link_requested,
    kinds.LINKED: _linked,
    kinds.UNLINKED: _unlinked,
    kinds.FIELD_DECIDED: _field_decided,
    kinds.CONFLICT_RESOLVED: _conflict_resolved,
    kinds.ECHO_RECOGNISED: _echo,
    kinds.OBSERVATION_IGNORED: _ignored,
    kinds.CW_TICKET_OBSERVED: _observed("cw"),
    kinds.SOC_TICKET_OBSERVED: _observed("soc"),
    kinds.NOTE_MIRROR_DECIDED: _note_decided,
    kinds.NOTE_SKIPPED: _note_skipped,
    kinds.COMMAND_ISSUED: _issued,
    kinds.COMMAND_DELIVERED: _delivered,
    kinds.COMMAND_FAILED: _failed,
    kinds.COMMAND_ABANDONED: _abandoned,
    kinds.COMMAND_PARKED: _parked,
    kinds.COMMAND_SUPERSEDED: _dropped,
    kinds.COMMAND_RETRIED: _retried,
    kinds.COMMAND_SKIPPED: _dropped,
    kinds.TENANT_SYNC_ENABLED: _tenant_switch,
    kinds.TENANT_SYNC_DISABLED: _tenant_switch,
    kinds.INTEGRATION_REMOVED: _removed,
    kinds.CONFIG_APPLIED: _config,
}
