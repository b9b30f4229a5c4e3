"""Plain-English sentences for the log's events: the console's ticket timeline.

Each event becomes one sentence an MSP technician can read without knowing the
event vocabulary: what arrived from which desk and who changed what, which rule
a decision followed and what it does (told with its cause, the observation,
for who and when), and what came of each command. The functions are pure and
never raise: the log holds what every version of socbridge wrote, so a missing
key or an unknown type gets a plainer sentence, not an error. Times are UTC,
shown as HH:MM:SS.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from eventstore import RecordedEvent
from projections import kinds

Severity = Literal["info", "change", "problem"]
Data = Mapping[str, Any]
Positions = Mapping[str, int]

#: The desks as a sentence names them.
DESK = {"cw": "ConnectWise", "soc": "the SOC"}
_TICKET = {"cw": "ConnectWise ticket", "soc": "SOC ticket"}
_RULE = re.compile(r"^R\d{1,2}$")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of a ticket's timeline, as the console renders it."""

    position: int
    recorded_at: str
    type: str
    #: Where it happened: ``ConnectWise``, ``SOC``, ``socbridge`` (a decision) or ``operator``.
    desk: str
    sentence: str
    #: The position of the event that caused it, when that event is in the timeline.
    cause_position: int | None
    severity: Severity
    rule: str | None = None


def timeline(events: list[RecordedEvent]) -> list[TimelineEntry]:
    """The entries of ``events`` (in their order), each pointing at its cause among them."""
    by_id = {e.event_id: e for e in events}
    positions = {e.event_id: e.position for e in events}
    entries = []
    for event in events:
        cause = by_id.get(event.causation_id or "")
        entries.append(
            TimelineEntry(
                position=event.position,
                recorded_at=event.recorded_at,
                type=event.type,
                desk=desk_label(event),
                sentence=explain(event, cause, positions=positions),
                cause_position=cause.position if cause is not None else None,
                severity=severity(event),
                rule=rule_of(event),
            )
        )
    return entries


def explain(
    event: RecordedEvent, caused_by: RecordedEvent | None, *, positions: Positions | None = None
) -> str:
    """One sentence saying what ``event`` means; ``caused_by`` is the event it names as its
    cause (if known), ``positions`` the log positions of other events it may refer to."""
    d = _data(event)
    cause = caused_by.data if caused_by is not None and isinstance(caused_by.data, Mapping) else {}
    handler = _EXPLAIN.get(event.type)
    try:
        text = handler(_Ctx(event, d, caused_by, cause, positions or {})) if handler else ""
    except Exception:  # a shape no version we know wrote: said plainly rather than raised
        text = ""
    return _sentence(text or _generic(event))


def rule_of(event: RecordedEvent) -> str | None:
    """The rule of BEHAVIOUR.md (``R1``..``R16``) the event follows, where its type or data
    says; ``None`` for what no single rule covers (conflicts, echoes of fields, outcomes)."""
    d = _data(event)
    named = d.get("rule")
    if isinstance(named, str) and _RULE.match(named):
        return named
    t = event.type
    if t == kinds.LINK_REQUESTED:
        return {"cw": "R1", "soc": "R2"}.get(str(d.get("origin")))
    if t == kinds.LINKED:
        return {"cw": "R1", "soc": "R2"}.get(str(d.get("link_id", "")).partition(":")[0])
    if t == kinds.UNLINKED:
        return "R3" if "unlinked status" in str(d.get("reason", "")) else None
    if t in (kinds.FIELD_DECIDED, kinds.REPAIR_DECIDED):
        return {"status": "R7", "priority": "R6"}.get(str(d.get("field")))
    if t in (kinds.NOTE_MIRROR_DECIDED, kinds.NOTE_SKIPPED):
        return "R8"
    if t == kinds.ECHO_RECOGNISED:
        return "R8" if d.get("kind") == "note" else None
    if t == kinds.OBSERVATION_IGNORED:
        return "R9" if "sync" in str(d.get("reason", "")) else None
    if t == kinds.COMMAND_ISSUED:
        return _command_rule(str(d.get("kind", "")), _map(d.get("params")))
    if t in (kinds.TENANT_SYNC_ENABLED, kinds.TENANT_SYNC_DISABLED):
        return "R9"
    if t == kinds.INTEGRATION_REMOVED:
        return "R16"
    if t.startswith("admin.sync_test."):
        return "R12"
    if t == kinds.INTAKE_REJECTED:
        reason = str(d.get("reason", ""))
        return "R14" if any(w in reason for w in ("sign", "allow", "address")) else None
    return None


def severity(event: RecordedEvent) -> Severity:
    """``problem`` for what needs a look, ``change`` for what changed a desk or the bridge,
    ``info`` for the rest."""
    d, t = _data(event), event.type
    if t in _PROBLEMS or (t == kinds.SYNC_TEST_FINISHED and d.get("ok") is False):
        return "problem"
    if t == kinds.FIELD_DECIDED:
        return "change" if d.get("writes") else "info"
    if t == kinds.COMMAND_ISSUED or t == kinds.COMMAND_DELIVERED:
        return "info" if "fetch_" in str(d.get("kind", "")) else "change"
    return "change" if t in _CHANGES else "info"


def desk_label(event: RecordedEvent) -> str:
    """Where the event happened: the desk observed or acted on, socbridge, or an operator."""
    t, d = event.type, _data(event)
    if t.startswith("connectwise."):
        return "ConnectWise"
    if t.startswith("soc."):
        return "SOC"
    if t.startswith("outbox."):
        return _desk_short(str(d.get("kind", "")).partition(".")[0]) or "socbridge"
    if t in (kinds.WATERMARK_ADVANCED, kinds.INTAKE_REJECTED):
        where = str(d.get("intake") or event.source)
        return _desk_short("cw" if where.startswith("connectwise") else where) or "socbridge"
    if t.startswith("admin."):
        return "operator"
    return "socbridge"


_PROBLEMS = frozenset(
    {
        kinds.COMMAND_FAILED,
        kinds.COMMAND_PARKED,
        kinds.COMMAND_ABANDONED,
        kinds.INTAKE_REJECTED,
        kinds.CONFLICT_RESOLVED,
        kinds.CHAIN_ACCEPTED,
        kinds.SYNC_TEST_STEP_FAILED,
    }
)
_CHANGES = frozenset(
    {
        kinds.LINK_REQUESTED,
        kinds.LINKED,
        kinds.UNLINKED,
        kinds.NOTE_MIRROR_DECIDED,
        kinds.REPAIR_DECIDED,
        kinds.CONFIG_APPLIED,
        kinds.TENANT_SYNC_ENABLED,
        kinds.TENANT_SYNC_DISABLED,
        kinds.INTEGRATION_REMOVED,
        kinds.COMMAND_RETRIED,
        kinds.COMMAND_SKIPPED,
    }
)


# ----------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class _Ctx:
    event: RecordedEvent
    d: Data
    cause_event: RecordedEvent | None
    cause: Data
    positions: Positions

    def ref(self, event_id: object) -> str | None:
        """``#position`` of another event, when known."""
        pos = self.positions.get(event_id) if isinstance(event_id, str) else None
        return f"#{pos}" if pos is not None else None


def _data(event: RecordedEvent) -> Data:
    return event.data if isinstance(event.data, Mapping) else {}


def _map(value: object) -> Data:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    """A value as words, or ``None`` when absent."""
    if value is None or value == "" or isinstance(value, (Mapping, list)):
        return None
    return str(value)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _generic(event: RecordedEvent) -> str:
    where = f" for {event.ticket}" if event.ticket else ""
    return f"recorded {event.type}{where} (no plainer explanation is known for this event)"


def moment(text: object) -> datetime | None:
    """An ISO time (``Z`` or an offset; naive taken as UTC) in UTC, or ``None``."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def clock(text: object) -> str | None:
    """An ISO time as HH:MM:SS in UTC (what is not a time is shown as it is)."""
    at = moment(text)
    if at is not None:
        return at.strftime("%H:%M:%S")
    return _text(text)


def _at(text: object) -> str:
    when = clock(text)
    return f" at {when}" if when else ""


def _desk(side: object) -> str:
    return DESK.get(str(side), "a desk")


def _desk_short(side: str) -> str | None:
    return {"cw": "ConnectWise", "soc": "SOC"}.get(side)


def _ticket(side: object, ident: object) -> str:
    name = _TICKET.get(str(side), "ticket")
    return f"{name} {ident}" if _text(ident) else name


def _snippet(text: object, limit: int = 60) -> str:
    words = " ".join(str(text).split()) if _text(text) else ""
    if not words:
        return ""
    return f': "{words[: limit - 1]}…"' if len(words) > limit else f': "{words}"'


def _note(d: Data, article: str = "") -> str:
    """The note a ``note_key`` (``cw:55``, ``soc:77``) names: ``ConnectWise note 55``."""
    side, _, ident = str(d.get("note_key", "")).partition(":")
    what = {"cw": "ConnectWise note", "soc": "SOC comment"}.get(side, "note")
    return " ".join(w for w in (article, what, ident) if w)


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------- observations


def _who(d: Data, *, own: bool = True) -> str:
    """`` by <person>`` of an observation; ``own=False`` names nobody for socbridge's own
    API member (it touched the ticket last, yet the field's change may be a person's)."""
    if d.get("own_write"):
        return " by socbridge" if own else ""
    who = next((_text(d.get(k)) for k in ("updated_by", "actor", "author") if d.get(k)), None)
    return f" by {who}" if who else ""


_VIA = {
    "callback": " (callback)",
    "webhook": " (webhook)",
    "poll": " (found by the reconciliation poll)",
    "fetch": " (read again by socbridge)",
}


def _via(d: Data) -> str:
    via = _text(d.get("via"))
    return _VIA.get(via, f" (via {via})") if via else ""


def _cw_ticket(c: _Ctx) -> str:
    d = c.d
    verb = {"added": "created"}.get(str(d.get("action")), "updated")
    fields = [f"{k} {d[k]}" for k in ("status", "priority") if _text(d.get(k))]
    shows = f": {', '.join(fields)}" if fields else ""
    return f"{_ticket('cw', d.get('id'))} {verb}{_who(d)}{_at(d.get('updated_at'))}{_via(d)}{shows}"


def _soc_ticket(c: _Ctx) -> str:
    d = c.d
    change = _map(d.get("change"))
    kind = _text(change.get("type"))
    what = f" ({kind.replace('_', ' ')}" if kind else ""
    if what and _text(change.get("current")) and _text(change.get("previous")):
        what += f" from {change['previous']} to {change['current']}"
    what += ")" if what else ""
    fields = [f"{k} {d[k]}" for k in ("status", "priority") if _text(d.get(k))]
    shows = f": {', '.join(fields)}" if fields else ""
    head = f"{_ticket('soc', d.get('id'))} updated{_who(d)}{_at(d.get('updated_at'))}"
    return f"{head}{what}{_via(d)}{shows}"


def _cw_note(c: _Ctx) -> str:
    d = c.d
    section = f" ({d['section']})" if _text(d.get("section")) else ""
    on = f" on {_ticket('cw', d['ticket_id'])}" if _text(d.get("ticket_id")) else ""
    when = _at(d.get("updated_at") or d.get("created_at"))
    note = f"ConnectWise note {d['id']}" if _text(d.get("id")) else "A ConnectWise note"
    return f"{note}{section}{on}{_who(d)}{when}{_snippet(d.get('text'))}"


def _soc_comment(c: _Ctx) -> str:
    d = c.d
    kind = "public " if d.get("public") is True else "private " if d.get("public") is False else ""
    note = f"{kind}SOC comment {d.get('comment_id', '')}".rstrip()
    on = f" on {_ticket('soc', d['ticket_id'])}" if _text(d.get("ticket_id")) else ""
    who = _text(d.get("author_id"))
    by = f" by {'agent' if d.get('author_is_staff') else 'user'} {who}" if who else ""
    return f"{note}{on}{by}{_at(d.get('created_at'))}{_snippet(d.get('body'))}"


def _cw_deleted(c: _Ctx) -> str:
    return f"{_ticket('cw', c.d.get('id'))} deleted in ConnectWise{_who(c.d)}{_via(c.d)}"


def _rejected(c: _Ctx) -> str:
    d = c.d
    where = str(d.get("intake") or d.get("source") or c.event.source)
    desk = "ConnectWise callback" if where.startswith(("cw", "connectwise")) else "SOC webhook"
    status = f"HTTP {d['status']}, " if _text(d.get("status")) else ""
    why = _text(d.get("message") or d.get("detail"))
    remote = f" from {d['remote']}" if _text(d.get("remote")) else ""
    return (
        f"a {desk}{remote} was refused ({status}{d.get('reason', 'no reason recorded')})"
        + (f": {why}" if why else "")
        + "; nothing was recorded from it"
    )


def _watermark(c: _Ctx) -> str:
    d = c.d
    if "cursor" in d or c.event.source == "soc":
        n = f" ({d['tickets']} tickets on the page)" if _text(d.get("tickets")) else ""
        return f"the SOC reconciliation poll moved on{n}"
    seen = f" ({d['seen']} tickets read)" if _text(d.get("seen")) else ""
    reached = f" up to changes of {clock(d['watermark'])}" if _text(d.get("watermark")) else ""
    return f"the ConnectWise reconciliation poll caught up{reached}{seen}"


# -------------------------------------------------------------------- decisions


def _changed(c: _Ctx, to: str = "") -> str:
    """Who changed the field on which desk, and when: from the decision and its cause."""
    side = c.d.get("side")
    at = c.d.get("at") or c.cause.get("updated_at") or (c.cause_event and c.cause_event.occurred_at)
    return f"changed{to} in {_desk(side)}{_who(c.cause, own=False)}{_at(at)}"


def _writes(d: Data) -> dict[str, str]:
    writes = _map(d.get("writes"))
    return {str(k): str(v) for k, v in writes.items()}


def _field_decided(c: _Ctx) -> str:
    d = c.d
    field = d.get("field", "a field")
    value = _text(d.get("value"))
    now = f" (now {value})" if value else ""
    writes = _writes(d)
    if not writes:
        there = _desk(_other(d.get("side")))
        return f"{field} {_changed(c)}{now}; {there} holds that already, nothing to copy"
    targets = _listed([_desk(t) for t in writes])
    return f"{field} copied to {targets}: {_changed(c)}{now}"


def _other(side: object) -> str:
    return "soc" if side == "cw" else "cw"


def _verdict(d: Data) -> str:
    """Who won a conflict, and why: the field's conflict policy in words."""
    field, winner, policy = d.get("field", "the field"), _desk(d.get("winner")), d.get("policy")
    if policy == "latest":
        if d.get("at") is not None and d.get("at") == d.get("other_at"):
            return f"{winner} wins: both changed it in the same second, and ties go to the SOC"
        return f"{winner} wins: it changed it last (the {field} policy is 'latest change wins')"
    if policy in DESK:
        return f"{winner} wins: the {field} policy is that {_desk(policy)} always wins"
    named = f"the {policy} policy" if _text(policy) else "the configured policy"
    return f"{winner} wins by {named}"


def _conflict(c: _Ctx) -> str:
    d = c.d
    theirs = _text(d.get("other_value"))
    since = _at(d.get("other_at"))
    meanwhile = f" while {_desk(_other(d.get('side')))} had it {theirs}{since}" if theirs else ""
    value = f" to {d['value']}" if _text(d.get("value")) else ""
    head = f"{d.get('field', 'a field')} conflict: {_changed(c, value)}{meanwhile}"
    writes = [f"{v} is written to {_desk(t)}" for t, v in _writes(d).items()]
    then = f", so {_listed(writes)}" if writes else ""
    return f"{head}; {_verdict(d)}{then}"


def _echo(c: _Ctx) -> str:
    d = c.d
    if d.get("kind") == "note":
        return f"{_note(d, 'the')} is one socbridge wrote itself: not mirrored back"
    side = d.get("side")
    field, value = str(d.get("field", "a field")), _text(d.get("value"))
    shows = f"{field} {value}" if value else field
    if d.get("repeat"):
        return (
            f"{_desk(side)} shows {shows}{_at(d.get('at'))} again, as socbridge wrote it: "
            "our own write seen again, nothing new"
        )
    return (
        f"{_desk(side)} shows {shows}{_at(d.get('at'))}, the value socbridge wrote there: "
        "our own write coming back (an echo), not copied again"
    )


def _ignored(c: _Ctx) -> str:
    d = c.d
    reason = str(d.get("reason", ""))
    side = d.get("side")
    if reason == "ambiguous":
        field = d.get("field", "a field")
        known = f" as the known {d['known']}" if _text(d.get("known")) else ""
        value = f" {d['value']}" if _text(d.get("value")) else ""
        if d.get("fetch"):
            then = "so the ticket is read again to tell which is current"
        elif c.ref(d.get("waits_for")):
            then = f"the read already asked for ({c.ref(d.get('waits_for'))}) tells"
        else:
            then = "a read already on its way tells"
        return (
            f"{_desk(side)} showed {field}{value}{_at(d.get('at'))}, the same second{known}: "
            f"which came last cannot be told, {then}"
        )
    if reason == "unchanged":
        fields = [str(f) for f in d.get("fields") or [] if isinstance(f, str)]
        names = _listed(fields) if fields else "the synced fields"
        return f"nothing new: {_desk(side)} still shows {names} as known{_at(d.get('at'))}"
    if "sync" in reason and ("off" in reason or "disabled" in reason):
        return "ignored: the tenant's sync is off, so its tickets are neither read nor written"
    if reason == "echo":
        return "ignored: our own write coming back"
    why = _text(d.get("detail")) or reason.replace("_", " ") or "no reason recorded"
    return f"observation ignored: {why}"


def _link_requested(c: _Ctx) -> str:
    d = c.d
    origin, ident = d.get("origin"), d.get("ticket_id")
    tenant = f" (tenant {d['tenant']})" if _text(d.get("tenant")) else ""
    if origin == "soc":
        return (
            f"new {_ticket('soc', ident)}{tenant}: a ConnectWise ticket is created for it on "
            "the integration board"
        )
    who = _who(c.cause)
    return (
        f"{_ticket('cw', ident)} was saved with the routing status on the integration board"
        f"{who}{_at(d.get('at'))}{tenant}: a SOC ticket is created for it"
    )


def _linked(c: _Ctx) -> str:
    d = c.d
    return (
        f"linked {_ticket('cw', d.get('cw_id'))} with {_ticket('soc', d.get('soc_id'))}: "
        "status, priority and notes now sync both ways"
    )


def _unlinked(c: _Ctx) -> str:
    reason = _text(c.d.get("reason")) or "no reason recorded"
    return f"unlinked ({reason}): no more sync either way, and the ticket is never linked again"


def _note_mirror(c: _Ctx) -> str:
    d = c.d
    target = d.get("target")
    by = _who(c.cause) or (f" by {c.cause['author_id']}" if _text(c.cause.get("author_id")) else "")
    as_ = " as a comment" if target == "soc" else " as a note" if target == "cw" else ""
    return f"{_note(d)}{by} mirrored to {_desk(target)}{as_}"


def _note_skipped(c: _Ctx) -> str:
    d = c.d
    why = _text(d.get("reason")) or "not sent"
    return f"{_note(d)} not mirrored: {why}"


def _repair(c: _Ctx) -> str:
    d = c.d
    why = f": {d['reason']}" if _text(d.get("reason")) else ""
    if _text(d.get("field")):
        return (
            f"audit repair: {d['field']} {d.get('value', '')} is written to "
            f"{_desk(d.get('target'))}{why}"
        )
    action = _text(d.get("repair")) or "repair"
    return f"audit --fix decided to {action} a command{why}"


# --------------------------------------------------------------------- commands


def _command_rule(kind: str, params: Data) -> str | None:
    action = kind.partition(".")[2]
    if action == "create_ticket":
        return "R2" if kind.startswith("cw.") else "R1"
    if action in ("add_note", "add_comment"):
        return "R8"
    if action == "update_ticket":
        fields = list(_map(params.get("fields")))
        return {"status": "R7", "priority": "R6"}.get(fields[0]) if len(fields) == 1 else None
    return None


def _command(kind: object, params: Data) -> str:
    """What a command does, as a verb phrase (``set priority to high in the SOC``); a
    ConnectWise write names the value as ConnectWise shows it (``Priority 2 - ...``)."""
    side, _, action = str(kind or "").partition(".")
    desk = _desk(side)
    if action == "update_ticket":
        fields = {**_map(params.get("fields")), **_map(params.get("remote"))}
        sets = [f"{k} to {v}" for k, v in fields.items()]
        return f"set {_listed(sets)} in {desk}" if sets else f"update the ticket in {desk}"
    if action == "create_ticket":
        where = f" on board {params['board']}" if _text(params.get("board")) else ""
        prio = f" (priority {params['priority']})" if _text(params.get("priority")) else ""
        return f"create the {_ticket(side, '')}{where}{prio}"
    if action == "add_comment":
        kind_ = "public " if params.get("public") else ""
        return f"add the note to the SOC ticket as a {kind_}comment"
    if action == "add_note":
        section = f"{params['section']} " if _text(params.get("section")) else ""
        return f"add the SOC reply to the ConnectWise ticket as a {section}note"
    if action == "fetch_ticket":
        return f"read the {_ticket(side, '')} again"
    if action == "fetch_notes":
        return f"read the {_ticket(side, '')}'s notes again"
    return f"carry out {kind}" if kind else "carry out a command"


def _issued(c: _Ctx) -> str:
    d, params = c.d, _map(c.d.get("params"))
    what = _command(d.get("kind"), params)
    extra = ""
    if params.get("reason") == "ambiguous":
        extra = ": two values from the same second, this read tells which is current"
    elif _text(params.get("reason")):
        extra = f": {params['reason']}"
    if params.get("reissue_of"):
        extra += " (sent again by audit --fix)"
    return f"queued: {what}{extra}"


def _what_of(c: _Ctx) -> str:
    """The command an outcome is about, told from the command event when it is the cause."""
    params = _map(c.cause.get("params")) if c.cause_event is not None else {}
    return _command(c.d.get("kind") or c.cause.get("kind"), params)


def _attempt(d: Data) -> str:
    return f" (attempt {d['attempt']})" if _text(d.get("attempt")) else ""


def _delivered(c: _Ctx) -> str:
    d = c.d
    result = _map(d.get("result"))
    side, _, action = str(d.get("kind", "")).partition(".")
    done = f"delivered{_attempt(d)}: {_what_of(c)}"
    if action == "create_ticket" and _text(result.get("id")):
        done += f"; {_ticket(side, result['id'])} created"
        if result.get("found_by_marker"):
            done += " (found by its marker: it had landed before a restart)"
    elif action == "fetch_ticket" and "fresh" in result:
        done += "; what it read is recorded" + ("" if result["fresh"] else " (not fresh)")
    return done


def _failed(c: _Ctx) -> str:
    d = c.d
    n = f"attempt {d['attempt']} to" if _text(d.get("attempt")) else "an attempt to"
    error = _text(d.get("error")) or "no error recorded"
    retry = ""
    delay = d.get("retry_in_s")
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        recorded = moment(c.event.recorded_at)
        at = (recorded + timedelta(seconds=delay)).strftime("%H:%M:%S") if recorded else None
        retry = f"; next try in {delay:.0f} s" + (f", at {at}" if at else "")
    return f"{n} {_what_of(c)} failed: {error}{retry}"


def _parked(c: _Ctx) -> str:
    d = c.d
    status = f" (HTTP {d['remote_status']})" if _text(d.get("remote_status")) else ""
    reason = _text(d.get("reason")) or "refused by the remote"
    return (
        f"parked{_attempt(d)}: {_what_of(c)} was {reason.removeprefix('parked: ')}{status}. "
        "It waits, with the ticket's later commands, until an operator retries or skips it"
    )


def _abandoned(c: _Ctx) -> str:
    reason = _text(c.d.get("reason")) or "no reason recorded"
    return f"given up{_attempt(c.d)}: {_what_of(c)}: {reason}"


def _superseded(c: _Ctx) -> str:
    successor = c.d.get("successor")
    by = c.ref(successor) or "a later command of this ticket"
    return f"not sent: {_what_of(c)}; {by} does all it would, so only the latest is sent"


# ------------------------------------------------------------------------ admin


def _operator(d: Data) -> str:
    who = _text(d.get("operator"))
    return f" by {who}" if who else ""


def _why(d: Data) -> str:
    return f": {d['reason']}" if _text(d.get("reason")) else ""


def _config_applied(c: _Ctx) -> str:
    d = c.d
    digest = f" (version {str(d['hash'])[:12]})" if _text(d.get("hash")) else ""
    return f"configuration applied{digest}{_why(d)}"


def _tenant_switch(on: bool) -> Callable[[_Ctx], str]:
    def sentence(c: _Ctx) -> str:
        tenant = _text(c.d.get("tenant")) or c.event.tenant or "a tenant"
        why = f" ({c.d['reason']})" if _text(c.d.get("reason")) else ""
        then = "" if on else ": its tickets are neither read nor written"
        return (
            f"sync of tenant {tenant} switched {'on' if on else 'off'}{_operator(c.d)}{why}{then}"
        )

    return sentence


def _removed(c: _Ctx) -> str:
    return "integration removed: callbacks and webhooks deregistered, sync stopped, log kept"


def _retried(c: _Ctx) -> str:
    what = _what_of(c)
    return f"parked command sent again{_operator(c.d)}{_why(c.d)} ({what})"


def _reread(c: _Ctx) -> str:
    return f"both tickets asked to be read again{_operator(c.d)}"


def _skipped(c: _Ctx) -> str:
    what = _what_of(c)
    return f"parked command dropped{_operator(c.d)}{_why(c.d)}: it will never {what}"


def _chain(c: _Ctx) -> str:
    d = c.d
    where = f" at position {d['first_bad_position']}" if _text(d.get("first_bad_position")) else ""
    problem = f" ({d['problem']})" if _text(d.get("problem")) else ""
    return f"started on a log that fails its check{where}{problem}, accepted{_operator(d)}"


def _test_started(c: _Ctx) -> str:
    tenant = f" for tenant {c.event.tenant}" if c.event.tenant else ""
    return f"sync test started{tenant}: a real round trip on both desks"


def _test_step(passed: bool) -> Callable[[_Ctx], str]:
    def sentence(c: _Ctx) -> str:
        d = c.d
        title = _text(d.get("title")) or _text(d.get("step")) or "a step"
        outcome = "passed" if passed else str(d.get("status") or "failed")
        return f"sync test step {outcome}: {title}{_why(d)}"

    return sentence


def _test_finished(c: _Ctx) -> str:
    d = c.d
    counts = [f"{d[k]} {k}" for k in ("passed", "failed", "skipped") if _text(d.get(k))]
    verdict = "passed" if d.get("ok") is True else "failed" if d.get("ok") is False else "finished"
    return f"sync test {verdict}" + (f": {', '.join(counts)}" if counts else "")


_EXPLAIN: dict[str, Callable[[_Ctx], str]] = {
    kinds.CW_TICKET_OBSERVED: _cw_ticket,
    kinds.CW_NOTE_OBSERVED: _cw_note,
    kinds.CW_TICKET_DELETED: _cw_deleted,
    kinds.SOC_TICKET_OBSERVED: _soc_ticket,
    kinds.SOC_COMMENT_OBSERVED: _soc_comment,
    kinds.INTAKE_REJECTED: _rejected,
    kinds.LINK_REQUESTED: _link_requested,
    kinds.LINKED: _linked,
    kinds.UNLINKED: _unlinked,
    kinds.FIELD_DECIDED: _field_decided,
    kinds.NOTE_MIRROR_DECIDED: _note_mirror,
    kinds.NOTE_SKIPPED: _note_skipped,
    kinds.ECHO_RECOGNISED: _echo,
    kinds.CONFLICT_RESOLVED: _conflict,
    kinds.OBSERVATION_IGNORED: _ignored,
    kinds.REPAIR_DECIDED: _repair,
    kinds.COMMAND_ISSUED: _issued,
    kinds.COMMAND_DELIVERED: _delivered,
    kinds.COMMAND_FAILED: _failed,
    kinds.COMMAND_ABANDONED: _abandoned,
    kinds.COMMAND_PARKED: _parked,
    kinds.COMMAND_SUPERSEDED: _superseded,
    kinds.WATERMARK_ADVANCED: _watermark,
    kinds.CONFIG_APPLIED: _config_applied,
    kinds.TENANT_SYNC_ENABLED: _tenant_switch(True),
    kinds.TENANT_SYNC_DISABLED: _tenant_switch(False),
    kinds.INTEGRATION_REMOVED: _removed,
    kinds.COMMAND_RETRIED: _retried,
    kinds.COMMAND_SKIPPED: _skipped,
    kinds.LINK_REREAD: _reread,
    kinds.CHAIN_ACCEPTED: _chain,
    kinds.SYNC_TEST_STARTED: _test_started,
    kinds.SYNC_TEST_STEP_PASSED: _test_step(True),
    kinds.SYNC_TEST_STEP_FAILED: _test_step(False),
    kinds.SYNC_TEST_FINISHED: _test_finished,
}
