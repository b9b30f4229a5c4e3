"""The fold: ``apply(state, event) -> state``, for every event that changes the read model.

Observations change nothing here: what they mean is decided by sync, and
its decisions are the events folded (an ignored observation too, when it
showed fields unchanged as of a newer source time). Outcomes of the outbox and admin facts
are folded too. The fold does no I/O and reads no clock, so folding the same
log always gives the same state, live or rebuilt from position 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from eventstore import RecordedEvent
from projections import kinds
from projections.state import BridgeState, later, new_field, new_link, other

Handler = Callable[[BridgeState, RecordedEvent, dict[str, Any]], None]


def apply(state: BridgeState, event: RecordedEvent) -> BridgeState:
    """Fold one event into ``state`` (in place) and return it."""
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(state, event, event.data)
    state.position = event.position
    return state


def fold(events: Iterable[RecordedEvent], state: BridgeState | None = None) -> BridgeState:
    """Fold ``events`` in order, from ``state`` or from empty."""
    state = state if state is not None else BridgeState()
    for event in events:
        apply(state, event)
    return state


def _saw(f: dict[str, Any], side: str, at: str | None) -> None:
    """Remember the newest source time known of ``side`` (older observations are stale)."""
    if at is None:
        return
    seen = f.get(f"{side}_seen")
    if seen is None or later(at, seen) > 0:
        f[f"{side}_seen"] = at


def _known(f: dict[str, Any], side: str, event: RecordedEvent) -> None:
    """Remember where the side's known value was last set: a fetch read before this
    position cannot tell whether it is newer than that value (same-second source times)."""
    f[f"{side}_pos"] = event.position


def _agree(f: dict[str, Any]) -> None:
    if f["cw"] is not None and f["cw"] == f["soc"]:
        f["base"] = f["cw"]


def _link_requested(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    link = new_link(d["link_id"], d["tenant"], d["origin"], event.position)
    origin = d["origin"]
    link[f"{origin}_id"] = d["ticket_id"]
    for name, values in d["fields"].items():
        f = link["fields"][name] = new_field()
        f[origin] = values[origin]
        f[f"expect_{other(origin)}"] = [values[other(origin)]]
        # The origin's value is known as of this source time: a late observation from
        # the same second that disagrees with it is ambiguous, not a change.
        _saw(f, origin, d.get("at"))
        _known(f, origin, event)
    state.links[d["link_id"]] = link
    index = state.by_cw if origin == "cw" else state.by_soc
    index[str(d["ticket_id"])] = d["link_id"]


def _linked(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    link = state.links[d["link_id"]]
    link["cw_id"], link["soc_id"] = d["cw_id"], d["soc_id"]
    link["state"] = "linked"
    link["linked_at"] = event.position
    state.by_cw[str(d["cw_id"])] = d["link_id"]
    state.by_soc[str(d["soc_id"])] = d["link_id"]
    created = other(link["origin"])
    for f in link["fields"].values():
        if f[f"expect_{created}"]:
            # The created ticket holds what it was created with.
            f[created] = f[f"expect_{created}"][0]
            f[f"expect_{created}"] = []
        _agree(f)


def _unlinked(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    link = state.links[d["link_id"]]
    link["state"] = "unlinked"
    link["unlinked_at"] = event.position
    link["unlinked_reason"] = d["reason"]
    if link["cw_id"] is not None:
        state.unlinked[str(link["cw_id"])] = event.position


def _field_decided(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    f = state.links[d["link_id"]]["fields"][d["field"]]
    f[d["side"]] = d["value"]
    f[f"{d['side']}_at"] = d["at"]
    _saw(f, d["side"], d["at"])
    _known(f, d["side"], event)
    for target, value in d["writes"].items():
        f[f"expect_{target}"].append(value)
        # The last few values written to a side: a late (retried or reordered) callback of
        # an older own write still carries one of them, after its echo was already seen.
        wrote = f.setdefault(f"wrote_{target}", [])
        wrote.append(value)
        del wrote[:-4]
    _agree(f)


def _conflict_resolved(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    _field_decided(state, event, d)
    state.conflicts += 1


def _echo(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    link = state.links.get(d["link_id"])
    if link is None:
        return
    if d["kind"] == "field":
        f = link["fields"][d["field"]]
        f[d["side"]] = d["value"]
        _saw(f, d["side"], d.get("at"))
        _known(f, d["side"], event)
        expects = f[f"expect_{d['side']}"]
        if d["value"] in expects:
            # Writes land in order: this one and every earlier one have come back.
            del expects[: expects.index(d["value"]) + 1]
        _agree(f)
    else:
        link["notes"].setdefault(d["note_key"], d.get("mirror_of") or "echo")


def _repair(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    # An audit repair writes a value to one side: it will come back as an echo. Other
    # repairs (a command re-sent, closed or acknowledged; an unlink) fold through the
    # command and outcome events they append.
    link = state.links.get(d["link_id"])
    if link is not None and "field" in d:
        link["fields"][d["field"]][f"expect_{d['target']}"].append(d["value"])


def _ignored(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    link = state.links.get(d["link_id"])
    if link is not None and d.get("reason") == "unchanged":
        # A newer observation showed these fields unchanged: known as of its source time.
        for name in d["fields"]:
            f = link["fields"][name]
            _saw(f, d["side"], d["at"])
            _known(f, d["side"], event)


def _note_decided(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    state.links[d["link_id"]]["notes"][d["note_key"]] = "pending"


def _note_skipped(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    state.links[d["link_id"]]["notes"][d["note_key"]] = f"skipped:{d['reason']}"


def _issued(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    state.outbox[event.event_id] = {
        "command_id": event.event_id,
        "kind": d["kind"],
        "link_id": d["link_id"],
        "tenant": event.tenant,
        "params": d["params"],
        "issued_at": event.position,
        "attempts": 0,
        "last_error": None,
    }


def _delivered(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    command = state.outbox.pop(d["command_id"], None)
    if command is None:
        return
    link = state.links.get(command["link_id"])
    if link is None:
        return
    kind, params, result = command["kind"], command["params"], d.get("result") or {}
    target = kind.split(".", 1)[0]
    if kind.endswith(".update_ticket"):
        for name, value in params["fields"].items():
            f = link["fields"][name]
            f[target] = value
            expects = f[f"expect_{target}"]
            if value in expects:
                # Delivered: this write and every earlier one to this side have landed.
                del expects[: expects.index(value) + 1]
            _saw(f, target, result.get("updated_at"))
            _known(f, target, event)
            _agree(f)
    elif kind.endswith((".add_comment", ".add_note")) and result.get("id") is not None:
        created = f"{target}:{result['id']}"
        link["notes"][created] = params["note_key"]
        link["notes"][params["note_key"]] = created


def _failed(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    command = state.outbox.get(d["command_id"])
    if command is not None:
        command["attempts"] = d["attempt"]
        command["last_error"] = d["error"]


def _abandoned(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    command = state.outbox.pop(d["command_id"], None)
    if command is not None:
        link = state.links.get(command["link_id"])
        if link is not None and command["kind"].endswith(".update_ticket"):
            # The value was never written: it will not come back as an echo.
            target = command["kind"].split(".", 1)[0]
            for name, value in command["params"]["fields"].items():
                expects = link["fields"][name][f"expect_{target}"]
                if value in expects:
                    expects.reverse()
                    expects.remove(value)
                    expects.reverse()
        command["reason"] = d["reason"]
        command["abandoned_at"] = event.position
        state.abandoned[d["command_id"]] = command


def _tenant_switch(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    # The operator's switch overrides the config's sync_enabled until the config changes it.
    state.tenant_switches[d["tenant"]] = event.type == kinds.TENANT_SYNC_ENABLED


def _removed(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    state.removed = True


def _config(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
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
    kinds.NOTE_MIRROR_DECIDED: _note_decided,
    kinds.REPAIR_DECIDED: _repair,
    kinds.NOTE_SKIPPED: _note_skipped,
    kinds.COMMAND_ISSUED: _issued,
    kinds.COMMAND_DELIVERED: _delivered,
    kinds.COMMAND_FAILED: _failed,
    kinds.COMMAND_ABANDONED: _abandoned,
    kinds.TENANT_SYNC_ENABLED: _tenant_switch,
    kinds.TENANT_SYNC_DISABLED: _tenant_switch,
    kinds.INTEGRATION_REMOVED: _removed,
    kinds.CONFIG_APPLIED: _config,
}
