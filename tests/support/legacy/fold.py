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
from tests.support.legacy.state import BridgeState, later, new_field, new_link, other

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
        # The ticket to create is expected to hold this (no command id: the create's
        # delivery links the pair and settles it, see _linked).
        f[f"expect_{other(origin)}"] = [values[other(origin)]]
        f[f"expect_{other(origin)}_ids"] = [None]
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
            f[f"{created}_ours"] = True
            f[f"expect_{created}"] = []
            f[f"expect_{created}_ids"] = []
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
    f[f"{d['side']}_ours"] = False
    _saw(f, d["side"], d["at"])
    _known(f, d["side"], event)
    # The writes it implies are expected from their commands (see _issued), which the
    # decision's batch holds right after it.
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
        if d.get("repeat"):
            return  # the known value seen again: it confirms no write still in flight
        f[d["side"]] = d["value"]
        f[f"{d['side']}_ours"] = True
        _saw(f, d["side"], d.get("at"))
        _known(f, d["side"], event)
        expects = f[f"expect_{d['side']}"]
        if d["value"] in expects:
            # Writes land in order: this one and every earlier one have come back.
            i = expects.index(d["value"])
            for command_id in _expected(f, d["side"])[: i + 1]:
                command = state.outbox.get(command_id or "")
                if command is not None:
                    # Settled by what the side was seen holding, yet not delivered (it
                    # may have landed before its outcome was recorded, or the value seen
                    # was a person's): it may no longer overwrite anything else.
                    settled = command.setdefault("settled", [])
                    if d["field"] not in settled:
                        settled.append(d["field"])
            _landed_through(f, d["side"], i)
        _agree(f)
    else:
        link["notes"].setdefault(d["note_key"], d.get("mirror_of") or "echo")


def _ignored(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
    link = state.links.get(d["link_id"])
    if link is not None and d.get("reason") == "ambiguous":
        waiting = link.setdefault("awaiting_read", {})
        seen = d.get("seen_position", event.position)
        waiting[d["side"]] = max(waiting.get(d["side"], seen), seen)
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
    link = state.links.get(d["link_id"])
    if link is not None and d["kind"].endswith(".update_ticket"):
        # A write (decided by sync, an audit repair, or a command sent again): expected
        # back from the target, and known by its command id until it lands.
        target = d["kind"].split(".", 1)[0]
        for name, value in d["params"]["fields"].items():
            f = link["fields"][name]
            _expected(f, target).append(event.event_id)
            f[f"expect_{target}"].append(value)
            # The last few values written to a side: a late (retried or reordered)
            # callback of an older own write still carries one of them.
            wrote = f.setdefault(f"wrote_{target}", [])
            wrote.append(value)
            del wrote[:-4]
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
            f[f"{target}_ours"] = True
            ids = _expected(f, target)
            if command["command_id"] in ids:
                # Delivered: this write and every earlier one to this side have landed.
                _landed_through(f, target, ids.index(command["command_id"]))
            elif value in f[f"expect_{target}"]:
                # A state saved before writes were known by command id: by value. (When
                # the id is gone, an echo has settled this write already, and a later
                # write of the same value is still in flight.)
                i = f[f"expect_{target}"].index(value)
                if ids[i] is None:
                    _landed_through(f, target, i)
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
                f = link["fields"][name]
                ids = _expected(f, target)
                if command["command_id"] in ids:
                    i = ids.index(command["command_id"])
                    del ids[i]
                    del f[f"expect_{target}"][i]
                # Nor was it written there: an observation showing it is not our echo.
                _forget_last(f.get(f"wrote_{target}", []), value)
        command["reason"] = d["reason"]
        command["abandoned_at"] = event.position
        state.abandoned[d["command_id"]] = command


def _expected(f: dict[str, Any], side: str) -> list[str | None]:
    """The command ids of the writes in ``expect_{side}``, in the same order: ``None``
    for what a created ticket is expected to hold, and throughout for a state saved
    before the ids were kept."""
    ids: list[str | None] = f.setdefault(f"expect_{side}_ids", [])
    if len(ids) != len(f[f"expect_{side}"]):
        ids[:] = [None] * len(f[f"expect_{side}"])
    return ids


def _landed_through(f: dict[str, Any], side: str, i: int) -> None:
    """Writes land in order: the expected write at ``i`` and every one before it."""
    ids = _expected(f, side)
    del f[f"expect_{side}"][: i + 1]
    del ids[: i + 1]


def _forget_last(values: list[str], value: str) -> None:
    """Remove the last occurrence of ``value`` from ``values``, if any."""
    for i in range(len(values) - 1, -1, -1):
        if values[i] == value:
            del values[i]
            return


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


def _observed(side: str) -> Handler:
    def fold(state: BridgeState, event: RecordedEvent, d: dict[str, Any]) -> None:
        read_after = d.get("read_after")
        if not d.get("fresh") or not isinstance(read_after, int):
            return
        link = state.link_for(side, d["id"])
        waiting = link.get("awaiting_read", {}) if link is not None else {}
        if waiting.get(side, read_after + 1) <= read_after:
            del waiting[side]
            if not waiting:
                del link["awaiting_read"]  # type: ignore[index]

    return fold


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
    kinds.TENANT_SYNC_ENABLED: _tenant_switch,
    kinds.TENANT_SYNC_DISABLED: _tenant_switch,
    kinds.INTEGRATION_REMOVED: _removed,
    kinds.CONFIG_APPLIED: _config,
}
