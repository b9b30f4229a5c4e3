"""What the console's buttons do, each recorded as an event naming who pressed it.

- **Retry** a parked command: ``admin.command.retried`` (as ``socbridge retry``);
  an abandoned one: ``admin.command.retried`` and the audit's own answer to it,
  a ``sync.repair.decided`` with what it implies (a note or create sent again
  with its marker, an update re-decided; see :func:`projections.audit.answer`).
- **Skip**: ``admin.command.skipped`` (as ``socbridge skip``); for an abandoned
  command also the audit's ``acknowledge`` repair, so the audit stops listing it.
- **Re-read both sides**: ``admin.link.reread`` and both tickets read again.
- **Tenant switch**: ``admin.tenant.sync_enabled|disabled``, the event
  ``socbridge tenants enable|disable`` appends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.console.pages import ProblemRow, describe_command, when
from daemon.console.sources import Bridge
from daemon.operations.repair import fix_events, operator_event, retried_data, skipped_data
from daemon.operations.tenant_switch import append_switch
from eventstore import NewEvent, RecordedEvent
from projections import kinds
from projections.audit import Fix, answer
from projections.state import Link, PendingCommand

SOURCE = "socbridge.console"


@dataclass(frozen=True)
class Action:
    """One button pressed in this process, for the Problems page's recent actions."""

    at: float
    operator: str
    action: str
    command_id: str
    link_id: str


@dataclass(frozen=True)
class Outcome:
    action: Action
    what: str
    #: Where the command stands now, in words.
    status: str


async def on_command(bridge: Bridge, command_id: str, action: str, operator: str) -> str:
    """Retry or skip a parked or abandoned command; the sentence the page shows."""
    state = bridge.state()
    reason = "from the console"
    pending = state.outbox.get(command_id)
    gone = state.abandoned.get(command_id)
    if pending is not None and pending.parked is not None:
        c = pending
    elif gone is not None:
        c = gone.command
    elif pending is not None:
        return f"Nothing done: {command_id[:8]} is not parked, the outbox is still on it."
    else:
        return f"Nothing done: {command_id[:8]} is no longer waiting (delivered or dropped)."
    retry = action == "retry"
    data = (retried_data if retry else skipped_data)(c, operator, reason)
    admin = operator_event(
        c, kinds.COMMAND_RETRIED if retry else kinds.COMMAND_SKIPPED, data, SOURCE
    )
    if gone is None:  # parked: the event alone lets it (and its lane) go, or drops it
        await bridge.store.append([admin])
        if retry:
            return f"Retrying: {describe_command(c)} ({command_id[:8]}), sent again within seconds."
        return f"Skipped: {describe_command(c)} ({command_id[:8]}) will not be delivered."
    # Abandoned: with the audit's own answer to it, so the audit stops listing it.
    fix = (
        answer(state, c, False, gone.reason) if retry
        else Fix("acknowledge", c.link_id, f"{c.kind} abandoned ({gone.reason}): skipped by "
                 f"{operator} from the console", c)
    )  # fmt: skip
    await bridge.store.append([admin, *fix_events(fix, state)])
    return f"{'Retried' if retry else 'Skipped'}: {fix.reason}."


async def reread(bridge: Bridge, link_id: str, operator: str) -> str:
    link = bridge.state().links.get(link_id)
    if link is None:
        return f"Nothing done: no link {link_id}."
    data = {"link_id": link_id, "operator": operator, "cw_id": link.cw_id, "soc_id": link.soc_id}
    await bridge.store.append([NewEvent(
        stream=f"admin:link:{link_id}", type=kinds.LINK_REREAD, data=data, tenant=link.tenant,
        ticket=link_id, correlation_id=link_id, source=SOURCE,
    )])  # fmt: skip
    for side in ("cw", "soc"):
        ticket_id = link.ticket_id(side)
        if ticket_id is not None:
            bridge.reread(side, ticket_id, link.tenant)
    return f"Reading both tickets of {link_id} again."


async def switch_tenant(bridge: Bridge, name: str, enable: bool, operator: str) -> str:
    if name not in {t.name for t in bridge.config().tenants}:
        return f"Nothing done: no tenant {name!r} in the configuration."
    was = bridge.tenant_enabled(name)
    if was == enable:
        return f"Sync for {name} is already {'on' if enable else 'off'}."
    set_by = "switch" if name in bridge.state().tenant_switches else "config"
    await append_switch(
        bridge.store, name, enable, operator=operator, reason="from the console", was=was,
        was_set_by=set_by, source=SOURCE,
    )  # fmt: skip
    return f"Sync for {name} is now {'on' if enable else 'off'}."


# ----------------------------------------------------------------------- reading


async def answered(bridge: Bridge) -> set[str]:
    """Abandoned commands a repair already answered (re-sent, acknowledged, settled)."""
    state = bridge.state()
    out: set[str] = set()
    for link_id in {a.command.link_id for a in state.abandoned.values()}:
        for e in await bridge.store.read_stream(f"link:{link_id}"):
            if e.type == kinds.REPAIR_DECIDED:
                out.update(str(x) for x in (e.data.get("command_id"), e.data.get("closes")) if x)
                out.update(str(x) for x in e.data.get("settles") or ())
    return out


async def _recorded_at(bridge: Bridge, position: int) -> str:
    if position <= 0:
        return ""
    found = await bridge.store.read_batch(position, 1, until=position)
    return when(found[0].recorded_at) if found else ""


async def stamp_times(bridge: Bridge, rows: list[ProblemRow]) -> list[ProblemRow]:
    return [dataclasses.replace(r, when=await _recorded_at(bridge, r.position)) for r in rows]


async def outcome(bridge: Bridge, action: Action) -> Outcome:
    """Where a command an operator acted on stands now."""
    state = bridge.state()
    if action.action == "reread":
        return Outcome(action, f"re-read both tickets of {action.link_id}", "asked")
    c: PendingCommand | None = state.outbox.get(action.command_id)
    gone = state.abandoned.get(action.command_id)
    known = c if c is not None else gone.command if gone is not None else None
    what = describe_command(known) if known is not None else action.command_id[:8]
    if c is not None:
        status = (
            f"parked again: {c.parked.message}" if c.parked is not None
            else f"waiting to go out ({c.attempts} attempt(s) so far)"
        )  # fmt: skip
        return Outcome(action, what, status)
    last = await _last_outcome(bridge, action.link_id, action.command_id)
    if last is not None:
        return Outcome(action, what, last)
    return Outcome(action, what, "done")


async def _last_outcome(bridge: Bridge, link_id: str, command_id: str) -> str | None:
    """The latest outcome of ``command_id`` (or of the command re-sent for it)."""
    events = await bridge.store.read_stream(f"outbox:{link_id}")
    reissued = {command_id}
    for e in events:
        if (
            e.type == kinds.COMMAND_ISSUED
            and e.data.get("params", {}).get("reissue_of") in reissued
        ):
            reissued.add(e.event_id)
    for e in reversed(events):
        cid = e.data.get("command_id") or e.causation_id
        if cid not in reissued:
            continue
        if e.type == kinds.COMMAND_DELIVERED:
            return "delivered"
        if e.type == kinds.COMMAND_SKIPPED:
            return "skipped"
        if e.type == kinds.COMMAND_ABANDONED:
            return f"abandoned: {e.data.get('reason')}"
        if e.type == kinds.COMMAND_SUPERSEDED:
            return "superseded by a later write"
    return None


async def ticket_events(bridge: Bridge, link: Link) -> list[RecordedEvent]:
    """A link's timeline: its decisions and commands and both tickets' observations."""
    found: dict[int, RecordedEvent] = {}
    for key in link.ticket_keys():
        for e in await bridge.store.read_ticket(link.tenant, key):
            found[e.position] = e
    return [found[p] for p in sorted(found)]


def as_toml(config: dict[str, Any], prefix: str = "") -> str:
    """The applied configuration as TOML-like text (secrets are their references)."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.extend((f"[{key}]", v) for v in value)
        else:
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"[{prefix}{key}]" if not key.startswith("[") else f"[{key}]"
        out += f"\n\n{name}\n" + as_toml(value, f"{prefix}{key}.").lstrip("\n")
    return out.strip("\n")
