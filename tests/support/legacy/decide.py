"""Deciding: from one input event and the folded state, the decisions and commands it implies.

``decide(state, event, rules)`` is pure: no I/O, no clock, no randomness.
Decision event ids are derived from the cause's id and their index, so
deciding the same event again (after a crash, or in a replay) yields the very
same events, and appending them again writes nothing.

Values are compared in the SOC's vocabulary: a status is ``solved`` or
``open`` (R7: ConnectWise's Solved status is ``solved``, any other is
``open``; SOC ``solved``/``closed`` are ``solved``), a priority is a SOC
priority (R6: a ConnectWise priority maps back through the mapping). Commands
carry both the normalised value (for the fold) and the remote value to write.

Source times have one-second resolution. An observation older than what is
known of its side is stale; a newer one is a change (or shows the fields
unchanged, which is recorded too). One from the *same* second that disagrees
with the known value is ambiguous: nothing is decided on it, and a
``{side}.fetch_ticket`` command reads the ticket again. A fresh fetch read
after the known value was set decides (see ``daemon/outbox/fetch.py``).
"""

from __future__ import annotations

from typing import Any

from daemon.sync.rules import SOC_SOLVED, Rules, TenantRule
from eventstore import NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from tests.support.legacy.state import BridgeState, later, other

SOC_MARKER = "socbridge:cw:"
CW_MARKER = "socbridge:soc:"
TEXT_MARKER = "[socbridge:"


def soc_external_id(cw_id: int) -> str:
    return f"{SOC_MARKER}{cw_id}"


def cw_external_ref(soc_id: int) -> str:
    return f"{CW_MARKER}{soc_id}"


def note_marker(side: str, ident: int | str) -> str:
    where = "ConnectWise note" if side == "cw" else "SOC comment"
    return f"{TEXT_MARKER} {where} {ident}]"


class _Decision:
    """Collects the events one input implies, with derived ids and the cause attached."""

    def __init__(self, cause: RecordedEvent, state: BridgeState, rules: Rules) -> None:
        self.cause = cause
        self.state = state
        self.rules = rules
        self.events: list[NewEvent] = []
        self.fetching: set[str] = set()  # sides a fetch was asked of by this input
        self.unchanged: list[str] = []  # fields this newer observation shows unchanged

    def still(self, link: dict[str, Any], side: str, at: str | None) -> None:
        """Record that the fields in :attr:`unchanged` still held their value at ``at``, so a
        late observation from an earlier second is known to be stale."""
        if self.unchanged:
            self.emit(
                kinds.OBSERVATION_IGNORED,
                link,
                {"reason": "unchanged", "side": side, "at": at, "fields": self.unchanged},
            )

    def emit(self, type_: str, link: dict[str, Any] | str, data: dict[str, Any]) -> str:
        link_id = link if isinstance(link, str) else link["link_id"]
        tenant = self.cause.tenant if isinstance(link, str) else link["tenant"]
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

    def command(self, link: dict[str, Any] | str, kind: str, params: dict[str, Any]) -> str:
        return self.emit(kinds.COMMAND_ISSUED, link, {"kind": kind, "params": params})


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
    decision = _Decision(event, state, rules)
    handler(decision, state, event.data, tenant, rules)
    return decision.events


# --------------------------------------------------------------------- values


def cw_status(rules: Rules, status: str | None) -> str:
    return "solved" if rules.cw_status_is_solved(status) else "open"


def soc_status(status: str | None) -> str:
    return "solved" if status in SOC_SOLVED else "open"


def remote_value(rules: Rules, target: str, name: str, value: str) -> dict[str, str]:
    """The remote field and value that make ``target`` hold normalised ``value``."""
    if target == "cw":
        if name == "status":
            # R7: SOC solved -> Solved; reopened after solved -> Unresolved.
            return {"status": rules.solved_status if value == "solved" else rules.unresolved_status}
        return {"priority": rules.priority_mapping[value]}
    if name == "status":
        return {"status": "solved" if value == "solved" else "open"}
    return {"priority": value}


def _update(
    d: _Decision,
    link: dict[str, Any],
    rules: Rules,
    writes: dict[str, tuple[str, str]],
    seen: tuple[str, str] | None = None,
) -> None:
    """One update command per target side, carrying every field written to it.

    ``accept`` lists, per field, the values the target may hold when the
    command is delivered without anyone else having touched it (what we last
    knew, or one of our own writes before this one). The outbox reads the
    ticket first and, if a field holds anything else, does not overwrite it
    blindly: the change is re-read and decided again (a conflict, usually).

    ``seen`` is ``(side, value)`` of the observation being decided: a conflict
    lost by that side writes back to it, and the value it was just seen holding
    is not folded into ``link`` yet, but is one the write may overwrite.
    """
    by_target: dict[str, dict[str, str]] = {}
    for target, (name, value) in writes.items():
        by_target.setdefault(target, {})[name] = value
    for target, values in by_target.items():
        remote: dict[str, str] = {}
        accept: dict[str, list[str]] = {}
        for name, value in values.items():
            remote.update(remote_value(rules, target, name, value))
            f = link["fields"][name]
            known = [f[target]] if f[target] is not None else []
            if seen is not None and seen[0] == target:
                known.append(seen[1])
            accept[name] = [*known, *f[f"expect_{target}"], value]
        params: dict[str, Any] = {"fields": values, "remote": remote, "accept": accept}
        if target == "cw":
            params["normalize"] = {
                "solved_status": rules.solved_status,
                "priority_mapping": dict(rules.priority_mapping),
                "default_soc_priority": rules.default_soc_priority,
            }
        d.command(link, f"{target}.update_ticket", params)


def _field(
    d: _Decision,
    link: dict[str, Any],
    rules: Rules,
    name: str,
    side: str,
    value: str,
    at: str | None,
    own_write: bool,
    read_after: int | None = None,
) -> None:
    """Decide one field of one observation of ``side``.

    ``read_after`` is set on a *fresh fetch*: the ticket was read after log
    position ``read_after``, and nothing else was recorded of that ticket
    between the read and its observation (see ``daemon/outbox/fetch.py``).
    """
    f = link["fields"][name]
    o = other(side)
    expects: list[str] = f[f"expect_{side}"]
    seen = f.get(f"{side}_seen")
    if at is not None and seen is not None:
        order = later(at, seen)
        if order < 0:
            # Older than what we already know of this side (a late poll, a duplicated
            # or reordered delivery): its value was superseded.
            return
        if order == 0 and value == f[side]:
            if value in f.get(f"wrote_{side}", []):
                # Our delivered write seen coming back: recognised, nothing to do. It
                # confirms nothing not known already (``repeat``): a later write of the
                # same value, still in flight, has not landed by it.
                d.emit(
                    kinds.ECHO_RECOGNISED,
                    link,
                    {"kind": "field", "field": name, "side": side, "value": value, "at": at,
                     "repeat": True},
                )  # fmt: skip
            return
        if order == 0 and not _fetched_since(f, side, read_after):
            # Source times have one-second resolution: this value and the one we know
            # were both current within the same second, and which came last cannot be
            # told from the times. Neither is acted on; the ticket is read again, and
            # that read (newer than both) decides. That holds for a value socbridge wrote
            # there earlier too: ``own_write`` says who last touched the *ticket*, and a
            # person may have set this field back to that value just before socbridge
            # wrote another one.
            _ambiguous(d, link, name, side, value, at)
            return
    if value == f[side]:
        # Nothing changed in this field: even when one of our writes in flight carries
        # this value too, this shows the value known before it as well (A -> B -> A in
        # flight), so it confirms none of them; their delivery will.
        if at is not None:
            d.unchanged.append(name)  # newer, same value: what is known holds as of ``at``
        return  # nothing changed in this field
    # ``own_write`` says who last touched the *ticket*: a person may have changed this
    # field just before socbridge wrote another one. So it only makes an echo of a value
    # socbridge wrote there earlier (or the other side's) when source times cannot tell
    # (one of them unknown). An observation newer than everything known of the side, or
    # a fresh fetch, showing a value no write in flight carries shows a change.
    untimed = at is None or seen is None
    if value in expects or (
        own_write and untimed and (value == f[o] or value in f.get(f"wrote_{side}", []))
    ):
        # Our own write coming back (or, untimed, a late repeat of it): never re-sent.
        d.emit(
            kinds.ECHO_RECOGNISED,
            link,
            {"kind": "field", "field": name, "side": side, "value": value, "at": at},
        )
        return
    # The other side moved on its own: a person changed it there (a value socbridge
    # wrote there came from this side, or from a conflict already decided), or a change
    # of it is on its way here.
    other_moved = (f[o] != f["base"] and not f.get(f"{o}_ours", False)) or bool(expects)
    if other_moved and f[o] is not None and f[o] != value:
        policy = rules.policy.get(name, "latest")
        if policy == "latest":
            order = later(at, f[f"{o}_at"])
            winner = side if order > 0 else o if order < 0 else "soc"
        else:
            winner = policy
        writes: dict[str, str] = {}
        if winner == side:
            writes[o] = value
            if expects and expects[-1] != value:
                writes[side] = value  # our stale write to this side must not stick
        else:
            writes[side] = f[o]
        d.emit(
            kinds.CONFLICT_RESOLVED,
            link,
            {
                "field": name,
                "side": side,
                "value": value,
                "at": at,
                "other_value": f[o],
                "other_at": f[f"{o}_at"],
                "base": f["base"],
                "policy": policy,
                "winner": winner,
                "writes": writes,
            },
        )
        for target, v in writes.items():
            _update(d, link, rules, {target: (name, v)}, seen=(side, value))
        return
    pending_o: list[str] = f[f"expect_{o}"]
    writes = {o: value} if f[o] != value or (pending_o and pending_o[-1] != value) else {}
    d.emit(
        kinds.FIELD_DECIDED,
        link,
        {"field": name, "side": side, "value": value, "at": at, "writes": writes},
    )
    if writes:
        _update(d, link, rules, {o: (name, value)})


def _fetched_since(f: dict[str, Any], side: str, read_after: int | None) -> bool:
    """Whether a fresh fetch was read after the side's known value was recorded: then it
    shows the ticket as it is now, at least as new as anything known of it."""
    return read_after is not None and read_after >= f.get(f"{side}_pos", 0)


def _ambiguous(
    d: _Decision, link: dict[str, Any], name: str, side: str, value: str, at: str | None
) -> None:
    f = link["fields"][name]
    waits_for = _pending_read(d, link, side)
    pending = waits_for is not None
    d.emit(
        kinds.OBSERVATION_IGNORED,
        link,
        {
            "reason": "ambiguous",
            "field": name,
            "side": side,
            "value": value,
            "at": at,
            "known": f[side],
            "detail": f"{value!r} and the known {f[side]!r} were both current at {at} "
            "(one-second source times); the ticket is read again to tell which is current",
            "fetch": not pending and side not in d.fetching,
            "seen_position": d.cause.position,
            **({"waits_for": waits_for} if waits_for is not None else {}),
        },
    )
    if not pending and side not in d.fetching:
        _ask_read(d, link, side, {"reason": "ambiguous", "field": name, "at": at})


def _pending_read(d: _Decision, link: dict[str, Any], side: str) -> str | None:
    fetch, answered = f"{side}.fetch_ticket", d.cause.data.get("fetch")
    for c in d.state.outbox.values():
        if (c["kind"] == fetch and c["link_id"] == link["link_id"]
                and c["command_id"] != answered and c.get("parked") is None):  # fmt: skip
            return str(c["command_id"])
    return None


def _ask_read(d: _Decision, link: dict[str, Any], side: str, params: dict[str, Any]) -> None:
    d.fetching.add(side)
    if side == "cw":
        params["api_member"] = d.rules.api_member
    d.command(link, f"{side}.fetch_ticket", params)


def _read_again(d: _Decision, link: dict[str, Any], side: str) -> None:
    if side not in link.get("awaiting_read", {}) or side in d.fetching:
        return
    if _pending_read(d, link, side) is None:
        _ask_read(d, link, side, {"reason": "ambiguous", "after_read": d.cause.data["command_id"]})


def _active(link: dict[str, Any] | None) -> bool:
    return link is not None and link["state"] in ("requested", "linked")


# --------------------------------------------------------------------- inputs


def _fresh(data: dict[str, Any]) -> int | None:
    """``read_after`` of a fresh fetch (see :func:`_field`), else ``None``."""
    read_after = data.get("read_after")
    return read_after if data.get("fresh") and isinstance(read_after, int) else None


def _cw_ticket(
    d: _Decision, state: BridgeState, data: dict[str, Any], tenant: TenantRule, rules: Rules
) -> None:
    cw_id = data["id"]
    link = state.link_for("cw", cw_id)
    if link is None:
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
        return
    if not _active(link):
        return
    if rules.unlinked_status is not None and data.get("status") == rules.unlinked_status:
        d.emit(
            kinds.UNLINKED,
            link,
            {"reason": f"set to the unlinked status {rules.unlinked_status!r} in ConnectWise"},
        )
        return
    at, own, fresh = data.get("updated_at"), bool(data.get("own_write")), _fresh(data)
    status = cw_status(rules, data.get("status"))
    _field(d, link, rules, "status", "cw", status, at, own, fresh)
    priority = rules.soc_priority_for_cw(data.get("priority"))
    _field(d, link, rules, "priority", "cw", priority, at, own, fresh)
    d.still(link, "cw", at)


def _cw_deleted(
    d: _Decision, state: BridgeState, data: dict[str, Any], tenant: TenantRule, rules: Rules
) -> None:
    link = state.link_for("cw", data["id"])
    if _active(link):
        assert link is not None
        d.emit(kinds.UNLINKED, link, {"reason": "deleted in ConnectWise"})


def _cw_note(
    d: _Decision, state: BridgeState, data: dict[str, Any], tenant: TenantRule, rules: Rules
) -> None:
    link = state.link_for("cw", data["ticket_id"])
    if not _active(link):
        return
    assert link is not None
    key = f"cw:{data['id']}"
    if key in link["notes"]:
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
    d: _Decision, state: BridgeState, data: dict[str, Any], tenant: TenantRule, rules: Rules
) -> None:
    soc_id = data["id"]
    link = state.link_for("soc", soc_id)
    status = soc_status(data.get("status"))
    priority = data.get("priority") or "normal"
    if link is None:
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
        return
    if not _active(link):
        return
    at, fresh = data.get("updated_at"), _fresh(data)
    _field(d, link, rules, "status", "soc", status, at, False, fresh)
    _field(d, link, rules, "priority", "soc", priority, at, False, fresh)
    d.still(link, "soc", at)


def _soc_comment(
    d: _Decision, state: BridgeState, data: dict[str, Any], tenant: TenantRule, rules: Rules
) -> None:
    link = state.link_for("soc", data["ticket_id"])
    if not _active(link):
        return
    assert link is not None
    key = f"soc:{data['comment_id']}"
    if key in link["notes"]:
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
    d: _Decision, state: BridgeState, data: dict[str, Any], tenant: TenantRule, rules: Rules
) -> None:
    kind = data.get("kind")
    if kind in ("cw.fetch_ticket", "soc.fetch_ticket"):
        read = state.links.get(data.get("link_id", ""))
        if read is not None and _active(read):
            _read_again(d, read, kind.split(".", 1)[0])
        return
    if kind not in ("soc.create_ticket", "cw.create_ticket"):
        return
    link = state.links.get(data.get("link_id", ""))
    if link is None or link["state"] != "requested":
        return
    created = (data.get("result") or {}).get("id")
    if created is None:
        return
    cw_id = link["cw_id"] if kind == "soc.create_ticket" else created
    soc_id = created if kind == "soc.create_ticket" else link["soc_id"]
    d.emit(kinds.LINKED, link, {"cw_id": cw_id, "soc_id": soc_id})
    if (data.get("result") or {}).get("found_by_marker"):
        # The create landed before a restart and is recorded only now: replies made on
        # the new ticket meanwhile were recorded with no link to decide them. Read them
        # again (see daemon/outbox/fetch.py, fetch_notes).
        side = kind.split(".", 1)[0]
        params: dict[str, Any] = {"reason": "create found by its marker"}
        if side == "cw":
            params["api_member"] = rules.api_member
        d.command(link, f"{side}.fetch_notes", params)


_INPUTS = {
    kinds.CW_TICKET_OBSERVED: _cw_ticket,
    kinds.CW_TICKET_DELETED: _cw_deleted,
    kinds.CW_NOTE_OBSERVED: _cw_note,
    kinds.SOC_TICKET_OBSERVED: _soc_ticket,
    kinds.SOC_COMMENT_OBSERVED: _soc_comment,
    kinds.COMMAND_DELIVERED: _delivered,
}
