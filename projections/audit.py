"""Audit: what in the folded history needs an operator's attention, and how to repair it.

:func:`audit` walks the log once, folding it, and reports each kind of trouble
the design names: links whose two sides disagree at rest, conflicts (resolved
by policy, or left unresolved because the winning write was abandoned),
echoes misread (a value recognised as our own write that we never expected,
or our own write taken for a person's change), commands stuck or abandoned,
and tickets linked on one side only. :func:`compare_remote` adds what the
live APIs show and the log cannot (drift). :func:`plan_repairs` turns
divergences into the writes that would make the sides agree, by the
configured policy; :func:`plan_fixes` plans the other repairs: commands
re-sent (with their exactly-once markers), closed or acknowledged, links
re-created or relinked, and links unlinked whose partner ticket is gone. All
pure: events and plain values in, findings out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from eventstore import RecordedEvent
from eventstore.progress import PROGRESS_EVERY, OnProgress
from projections import kinds
from projections.fold import apply
from projections.state import (
    FIELDS,
    SIDES,
    BridgeState,
    FieldName,
    FieldState,
    PendingCommand,
    Side,
    as_field_name,
    as_side,
    is_side,
    later,
    other,
)

ATTENTION = "attention"
NOTICE = "notice"


@dataclass(frozen=True)
class Finding:
    """One thing the audit found, about one link (or the log as a whole)."""

    kind: str
    severity: str
    link_id: str | None
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "link_id": self.link_id,
            "detail": self.detail,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Repair:
    """A write that makes a divergent field agree: ``target`` side gets ``value``."""

    link_id: str
    field: FieldName
    target: Side
    value: str
    reason: str


@dataclass(frozen=True)
class Orphan:
    """Two live tickets joined by socbridge's marker with no link in the log.

    ``origin`` is the side whose ticket came first (the other carries the marker);
    ``cw``/``soc`` are their live values, normalised as sync compares them.
    """

    origin: Side
    cw_id: int
    soc_id: int
    tenant: str
    cw: Mapping[str, str]
    soc: Mapping[str, str]

    @property
    def link_id(self) -> str:
        return f"{self.origin}:{self.cw_id if self.origin == 'cw' else self.soc_id}"


def orphan_findings(orphans: Iterable[Orphan]) -> list[Finding]:
    """A finding per marked pair the log has no link for (seen with ``--remote``)."""
    return [
        Finding(
            "marker-unlinked",
            ATTENTION,
            o.link_id,
            f"ConnectWise ticket {o.cw_id} and SOC ticket {o.soc_id} carry socbridge's marker "
            "but the log has no link for them",
            {"cw_id": o.cw_id, "soc_id": o.soc_id},
        )
        for o in orphans
    ]


@dataclass(frozen=True)
class Fix:
    """A repair beyond a field value, appended as a ``sync.repair.decided`` decision.

    ``action`` is ``reissue`` (send ``command`` again as a new command carrying the
    same marker, which the outbox looks up before writing), ``acknowledge`` (the
    command needs no re-send: nothing left to do, or its fields are re-decided),
    ``unlink`` (the link's partner ticket is gone), ``relink`` (``orphan``, two
    marked tickets the log has no link for, are linked again) or ``retry`` (a parked
    ``command`` is let go again, its lane with it). ``close`` first records the
    still-pending ``command`` as abandoned by the audit; ``settles`` names the other
    abandoned commands this repair answers for.
    """

    action: str
    link_id: str
    reason: str
    command: PendingCommand | None = None
    close: bool = False
    settles: tuple[str, ...] = ()
    orphan: Orphan | None = None


@dataclass
class AuditReport:
    state: BridgeState
    findings: list[Finding] = field(default_factory=list)
    #: command id -> position of the repair decision that answered for it
    repaired: dict[str, int] = field(default_factory=dict)
    #: command id -> (recorded_at, retry_in_s) of its last failed attempt
    failed: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: link id -> its latest create command
    creates: dict[str, PendingCommand] = field(default_factory=dict)

    @property
    def needs_attention(self) -> bool:
        return any(f.severity == ATTENTION for f in self.findings)


@dataclass(frozen=True)
class Limits:
    """When a pending command counts as stuck: this many failed attempts, or this old."""

    stuck_attempts: int = 3
    stuck_age_events: int = 1000


class _Walk:
    """Folds the log and notes, per kind of event, what the findings need (one method each,
    dispatched by event type in :data:`_NOTES`)."""

    def __init__(self) -> None:
        self.state = BridgeState()
        self.findings: list[Finding] = []
        self.own_writes: set[str] = set()
        self.command_cause: dict[str, str] = {}
        self.conflicts: list[tuple[RecordedEvent, str]] = []
        self.abandoned: list[str] = []
        self.created: dict[str, int] = {}
        self.repaired: dict[str, int] = {}
        self.failed: dict[str, tuple[str, float]] = {}
        self.creates: dict[str, PendingCommand] = {}
        self.skipped: list[RecordedEvent] = []

    def step(self, event: RecordedEvent) -> None:
        note = _NOTES.get(event.type)
        if note is not None:
            note(self, event)
        apply(self.state, event)

    def observed(self, event: RecordedEvent) -> None:
        if event.data.get("own_write"):
            self.own_writes.add(event.event_id)

    def echo(self, event: RecordedEvent) -> None:
        """An echo nobody expected may have swallowed a person's change."""
        d = event.data
        link = self.state.links.get(d["link_id"])
        if d.get("kind") != "field" or link is None:
            return
        s = link.fields[as_field_name(d["field"])].side(as_side(d["side"]))
        # Expected back: a write in flight, or the one delivered last (its echo comes after
        # the delivery). Another value never expected may have been a person's change.
        if s.expects(d["value"]) is None and d["value"] != s.value:
            self.findings.append(
                Finding(
                    "echo-misread",
                    ATTENTION,
                    d["link_id"],
                    f"{d['field']}={d['value']!r} on {d['side']} was taken for our own "
                    f"write, but none was expected (#{event.position}): a person's change "
                    "may have been swallowed",
                    {"position": event.position, "field": d["field"]},
                )
            )

    def decided(self, event: RecordedEvent) -> None:
        """A change decided on socbridge's own write was an echo misread."""
        d = event.data
        if event.causation_id in self.own_writes:
            self.findings.append(
                Finding(
                    "echo-misread",
                    ATTENTION,
                    d["link_id"],
                    f"our own write of {d['field']}={d['value']!r} on {d['side']} was "
                    f"taken for a person's change (#{event.position})",
                    {"position": event.position, "field": d["field"]},
                )
            )

    def conflict(self, event: RecordedEvent) -> None:
        self.decided(event)
        self.conflicts.append((event, event.causation_id or ""))

    def issued(self, event: RecordedEvent) -> None:
        d = event.data
        self.command_cause[event.event_id] = event.causation_id or ""
        if str(d.get("kind")).endswith(".create_ticket"):
            self.creates[d["link_id"]] = PendingCommand(
                command_id=event.event_id,
                kind=d["kind"],
                link_id=d["link_id"],
                tenant=event.tenant,
                params=d["params"],
                issued_at=event.position,
            )

    def command_abandoned(self, event: RecordedEvent) -> None:
        self.abandoned.append(event.data.get("command_id", ""))

    def command_skipped(self, event: RecordedEvent) -> None:
        self.skipped.append(event)

    def command_failed(self, event: RecordedEvent) -> None:
        d = event.data
        self.failed[d["command_id"]] = (event.recorded_at, float(d.get("retry_in_s") or 0))

    def delivered(self, event: RecordedEvent) -> None:
        d = event.data
        if str(d.get("kind")).endswith("create_ticket"):
            self.created[d.get("link_id", "")] = event.position

    def repair(self, event: RecordedEvent) -> None:
        d = event.data
        for command_id in (d.get("command_id"), *d.get("settles", ())):
            if command_id:
                self.repaired[command_id] = event.position


_NOTES: dict[str, Callable[[_Walk, RecordedEvent], None]] = {
    **dict.fromkeys(kinds.OBSERVATIONS, _Walk.observed),
    kinds.ECHO_RECOGNISED: _Walk.echo,
    kinds.FIELD_DECIDED: _Walk.decided,
    kinds.CONFLICT_RESOLVED: _Walk.conflict,
    kinds.COMMAND_ISSUED: _Walk.issued,
    kinds.COMMAND_ABANDONED: _Walk.command_abandoned,
    kinds.COMMAND_FAILED: _Walk.command_failed,
    kinds.COMMAND_SKIPPED: _Walk.command_skipped,
    kinds.COMMAND_DELIVERED: _Walk.delivered,
    kinds.REPAIR_DECIDED: _Walk.repair,
}


def audit(
    events: Iterable[RecordedEvent],
    limits: Limits = Limits(),
    on_progress: OnProgress | None = None,
) -> AuditReport:
    """Fold ``events`` from position 1 and report everything that needs a look.

    ``on_progress`` is told the position folded to every
    :data:`~eventstore.progress.PROGRESS_EVERY` events."""
    walk = _Walk()
    for event in events:
        walk.step(event)
        if on_progress is not None and event.position % PROGRESS_EVERY == 0:
            on_progress(event.position, None)
    state = walk.state
    if on_progress is not None:
        on_progress(state.position, None)
    findings = list(walk.findings)
    # A conflict stays unresolved while a write it decided is abandoned and unrepaired.
    abandoned_causes = {
        walk.command_cause.get(c, "") for c in walk.abandoned if c not in walk.repaired
    }
    for event, cause in walk.conflicts:
        d = event.data
        unresolved = cause in abandoned_causes
        findings.append(
            Finding(
                "conflict-unresolved" if unresolved else "conflict-resolved",
                ATTENTION if unresolved else NOTICE,
                d["link_id"],
                f"{d['field']}: {d['side']} {d['value']!r} vs {other(d['side'])} "
                f"{d['other_value']!r}, policy {d['policy']} -> {d['winner']} wins"
                + (" but its write was abandoned" if unresolved else ""),
                {"position": event.position, "field": d["field"], "winner": d["winner"]},
            )
        )
    findings.extend(_divergent(state))
    findings.extend(_commands(state, limits, walk.repaired))
    findings.extend(_skipped(walk.skipped))
    findings.extend(_one_sided(state, walk.created))
    return AuditReport(state, findings, walk.repaired, walk.failed, walk.creates)


def _busy(state: BridgeState, link_id: str) -> bool:
    """Whether a pending command may still change what the link's fields hold: notes
    never do (a field write in flight shows as the field's ``in_flight``)."""
    return any(not c.is_note for c in state.commands_of(link_id))


def parked_lanes(state: BridgeState) -> dict[str, PendingCommand]:
    """Lane -> the parked command holding it (see :attr:`PendingCommand.lane`)."""
    return {c.lane: c for c in state.parked()}


def _divergent(state: BridgeState) -> Iterable[Finding]:
    for link_id, link in sorted(state.links.items()):
        if link.state != "linked" or _busy(state, link_id):
            continue
        for name in FIELDS:
            f = link.fields[name]
            cw, soc = f.cw.value, f.soc.value
            if f.in_flight or cw is None or soc is None:
                continue
            if cw != soc:
                yield Finding(
                    "divergent",
                    ATTENTION,
                    link_id,
                    f"{name}: ConnectWise has {cw!r}, the SOC has {soc!r}, nothing pending",
                    {"field": name, "cw": cw, "soc": soc},
                )


def _stuck(state: BridgeState, c: PendingCommand, limits: Limits) -> bool:
    age = state.position - c.issued_at
    return c.attempts >= limits.stuck_attempts or age >= limits.stuck_age_events


def _commands(state: BridgeState, limits: Limits, repaired: Mapping[str, int]) -> Iterable[Finding]:
    held = parked_lanes(state)
    for command_id, c in sorted(state.outbox.items()):
        age = state.position - c.issued_at
        if c.parked is not None:
            behind = sum(o.lane == c.lane for o in state.outbox.values()) - 1
            yield Finding(
                "command-parked",
                ATTENTION,
                c.link_id,
                f"{c.kind} parked: {c.parked.message}"
                + (f"; {behind} more of this ticket wait behind it" if behind else "")
                + f" (socbridge retry {command_id} once fixed, or socbridge skip {command_id})",
                {"command_id": command_id, "remote_status": c.parked.remote_status,
                 "parked_at": c.parked.parked_at, "waiting": behind},
            )  # fmt: skip
        elif c.lane not in held and _stuck(state, c, limits):
            yield Finding(
                "command-stuck",
                ATTENTION,
                c.link_id,
                f"{c.kind} pending for {age} events, {c.attempts} attempts, "
                f"last error: {c.last_error}",
                {"command_id": command_id, "attempts": c.attempts, "age": age},
            )
    for command_id, a in sorted(state.abandoned.items()):
        c = a.command
        if command_id in repaired:
            yield Finding(
                "command-repaired",
                NOTICE,
                c.link_id,
                f"{c.kind} abandoned ({a.reason}), repaired by #{repaired[command_id]}",
                {"command_id": command_id, "repair_position": repaired[command_id]},
            )
            continue
        yield Finding(
            "command-abandoned",
            ATTENTION,
            c.link_id,
            f"{c.kind} abandoned: {a.reason}",
            {"command_id": command_id},
        )


def _skipped(skipped: Iterable[RecordedEvent]) -> Iterable[Finding]:
    for event in skipped:
        d = event.data
        yield Finding(
            "command-skipped",
            NOTICE,
            d.get("link_id"),
            f"{d.get('kind')} skipped by {d.get('operator') or '?'} (#{event.position})"
            + (f": {d['reason']}" if d.get("reason") else ""),
            {"command_id": d.get("command_id"), "position": event.position},
        )


def _one_sided(state: BridgeState, created: Mapping[str, int]) -> Iterable[Finding]:
    for link_id, link in sorted(state.links.items()):
        if link.state != "requested":
            continue
        if any(c.is_create for c in state.commands_of(link_id)):
            continue
        why = (
            f"the create was delivered (#{created[link_id]}) but the link was never made"
            if link_id in created
            else "no create is pending and none was delivered"
        )
        yield Finding(
            "linked-one-side",
            ATTENTION,
            link_id,
            f"{link.origin} ticket has no partner: {why}",
            {"origin": link.origin},
        )


def compare_remote(
    state: BridgeState, remote: Mapping[str, Mapping[str, Mapping[str, str] | None]]
) -> list[Finding]:
    """Findings where a live ticket (normalised values per side) differs from the projection."""
    findings: list[Finding] = []
    for link_id, sides in sorted(remote.items()):
        link = state.links[link_id]
        for side in SIDES:
            values = sides.get(side)
            if values is None:
                findings.append(
                    Finding(
                        "remote-missing",
                        ATTENTION,
                        link_id,
                        f"the {side} ticket {link.ticket_id(side)} is gone",
                    )
                )
                continue
            for name in FIELDS:
                s = link.fields[name].side(side)
                live = values.get(name)
                if live != s.value and live not in s.expected_values:
                    findings.append(
                        Finding(
                            "remote-drift",
                            ATTENTION,
                            link_id,
                            f"{name} on {side} is {live!r} live, the log knows {s.value!r}",
                            {"field": name, "side": side, "live": live, "known": s.value},
                        )
                    )
    return findings


def _winner(f: FieldState, policy: str, drifted: set[Side]) -> Side:
    if len(drifted) == 1:
        return next(iter(drifted))  # the change the log never saw is the newest fact
    if is_side(policy):
        return policy
    order = later(f.cw.changed_at, f.soc.changed_at)
    return "cw" if order > 0 else "soc"


def plan_repairs(
    state: BridgeState,
    policy: Mapping[str, str],
    remote: Mapping[str, Mapping[str, Mapping[str, str] | None]] | None = None,
) -> list[Repair]:
    """The writes that make each divergent field agree, winner by policy (or by drift)."""
    repairs: list[Repair] = []
    for link_id, link in sorted(state.links.items()):
        if link.state != "linked" or _busy(state, link_id):
            continue
        live = (remote or {}).get(link_id)
        for name in FIELDS:
            f = link.fields[name]
            if f.in_flight:
                continue
            values: dict[Side, str | None] = {s: f.side(s).value for s in SIDES}
            drifted: set[Side] = set()
            if live is not None:
                for s in SIDES:
                    side_values = live.get(s)
                    if side_values is not None and side_values.get(name) != f.side(s).value:
                        values[s] = side_values.get(name)
                        drifted.add(s)
            cw, soc = values["cw"], values["soc"]
            if cw is None or soc is None or cw == soc:
                continue
            winner = _winner(f, policy.get(name, "latest"), drifted)
            repairs.append(
                Repair(
                    link_id,
                    name,
                    other(winner),
                    cw if winner == "cw" else soc,
                    f"{name} differs at rest (cw {cw!r}, soc {soc!r}); "
                    f"{winner} wins" + (" (changed outside the log)" if drifted else ""),
                )
            )
    return repairs


#: How long past its announced retry a failed command may be before it counts as no
#: longer retried (the outbox's jitter, a slow attempt, a restart in between).
RETRY_GRACE = timedelta(seconds=60)


def _retrying(report: AuditReport, command_id: str, now: datetime | None) -> bool:
    """Whether the outbox is still on this command: its last failure announced a retry
    that is not overdue yet. Without a clock (``now``), any failure counts as retrying."""
    failed = report.failed.get(command_id)
    if failed is None:
        return False
    if now is None:
        return True
    at, retry_in_s = failed
    due = datetime.fromisoformat(at.replace("Z", "+00:00")) + timedelta(seconds=retry_in_s)
    return due + RETRY_GRACE > now


def _held(state: BridgeState, c: PendingCommand) -> bool:
    """Held on purpose: the tenant's sync is off (R9) or the integration removed (R16)."""
    return state.removed or state.tenant_switches.get(c.tenant or "") is False


def _waits_for_create(state: BridgeState, c: PendingCommand) -> bool:
    link = state.links.get(c.link_id)
    return (
        link is not None
        and link.state == "requested"
        and not c.is_create
        and link.ticket_id(c.target) is None
    )


def plan_fixes(
    report: AuditReport,
    *,
    limits: Limits = Limits(),
    now: datetime | None = None,
    remote: Mapping[str, Mapping[str, Mapping[str, str] | None]] | None = None,
    orphans: Iterable[Orphan] = (),
) -> list[Fix]:
    """The repairs for one-sided links, stuck or abandoned commands and gone partners.

    - A link with one ticket only (its create abandoned, stuck, or delivered without
      an id): the create is sent again with its marker (SOC ``external_id``,
      ConnectWise ``externalXRef``); the outbox looks the marker up first, so a ticket
      that did land is linked, not created twice (relink), and one that did not is
      created (re-create).
    - An abandoned note (or fetch): sent again, its marker looked up first.
    - An abandoned status/priority update is not sent again as it was (its value may
      be stale by now): it is acknowledged, and a field the two sides still disagree
      on is repaired by its policy (:func:`plan_repairs`).
    - A stuck command (pending, failing or old) that the outbox is no longer retrying
      is closed (recorded as abandoned by the audit) and handled as above; one still
      retrying, held by a tenant switch or removal, or waiting for its link's create
      is left alone.
    - A linked link whose partner ticket is gone (``remote``): unlinked, with the
      reason; it is never linked again, as after a deletion in ConnectWise.
    - Two live tickets joined by socbridge's marker with no link in the log
      (``orphans``, as after restoring an older log): linked again, with what each
      side holds now; a field they disagree on is then repaired by its policy.
    """
    state = report.state
    fixes: list[Fix] = []
    done: set[str] = set(report.repaired)
    held = parked_lanes(state)

    # A parked command goes again, and what waits behind it in its lane after it, in order.
    for lane, c in sorted(held.items()):
        assert c.parked is not None
        fixes.append(Fix(
            "retry", c.link_id,
            f"{c.kind} was parked ({c.parked.message}): sent again, and the "
            "commands of this ticket that waited behind it after it",
            c,
        ))  # fmt: skip
        done.update(o.command_id for o in state.outbox.values() if o.lane == lane)

    def stuck_and_idle(c: PendingCommand) -> bool:
        return (
            c.command_id not in done
            and _stuck(state, c, limits)
            and not _retrying(report, c.command_id, now)
            and not _held(state, c)
        )

    for link_id, link in sorted(state.links.items()):
        if link.state != "requested":
            continue
        origin = link.origin
        pending = [c for c in state.commands_of(link_id) if c.is_create]
        if pending:
            c = min(pending, key=lambda c: c.issued_at)
            if not stuck_and_idle(c):
                continue  # on its way
            fixes.append(Fix(
                "reissue", link_id,
                f"the create of the {origin} ticket's partner is stuck "
                f"({c.attempts} attempts, last error: {c.last_error}): sent again, "
                "its marker looked up first",
                c, close=True,
            ))  # fmt: skip
            done.add(c.command_id)
        else:
            create = report.creates.get(link_id)
            if create is None or _held(state, create):
                continue
            settles = tuple(
                cid
                for cid, a in sorted(state.abandoned.items())
                if a.command.link_id == link_id
                and a.command.is_create
                and cid not in done
                and cid != create.command_id
            )
            fixes.append(Fix(
                "reissue", link_id,
                f"the {origin} ticket has no partner: its create is sent again with its marker "
                "(a partner that did land is linked, not created twice)",
                create, settles=settles,
            ))  # fmt: skip
            done.update(settles)
            done.add(create.command_id)
        # The outbox sends a link's commands oldest first: what waited for the partner is
        # closed and sent again after the new create, in its order.
        for c in sorted(state.commands_of(link_id), key=lambda c: c.issued_at):
            if c.command_id not in done:
                fixes.append(Fix(
                    "reissue", link_id,
                    f"{c.kind} waited for the partner ticket: sent again after its create",
                    c, close=True,
                ))  # fmt: skip
                done.add(c.command_id)

    for command_id, a in sorted(state.abandoned.items()):
        if command_id in done:
            continue
        fixes.append(answer(state, a.command, False, a.reason))
        done.add(command_id)

    for command_id, c in sorted(state.outbox.items()):
        if command_id in done or _waits_for_create(state, c) or not stuck_and_idle(c):
            continue
        fixes.append(answer(state, c, True))
        done.add(command_id)

    for link_id, sides in sorted((remote or {}).items()):
        linked = state.links.get(link_id)
        if linked is None or linked.state != "linked":
            continue
        for side in SIDES:
            if sides.get(side) is None:
                fixes.append(Fix(
                    "unlink", link_id,
                    f"the {side} ticket {linked.ticket_id(side)} is gone (found by audit "
                    "--remote): unlinked, never linked again",
                ))  # fmt: skip
                break
    for o in orphans:
        if o.link_id not in state.links:
            fixes.append(Fix(
                "relink", o.link_id,
                f"ConnectWise ticket {o.cw_id} and SOC ticket {o.soc_id} carry socbridge's "
                "marker but had no link in the log: linked again",
                orphan=o,
            ))  # fmt: skip
    return fixes


def answer(state: BridgeState, c: PendingCommand, close: bool, reason: str | None = None) -> Fix:
    """The fix for one abandoned (or, with ``close``, stuck) command that is not a create."""
    link = state.links.get(c.link_id)
    what = "stuck and no longer retried" if close else f"abandoned ({reason})"
    if link is None or link.state == "unlinked":
        return Fix("acknowledge", c.link_id, f"{c.kind} {what}: the link is unlinked, "
                   "nothing to send", c, close=close)  # fmt: skip
    if c.is_create:
        return Fix("acknowledge", c.link_id, f"{c.kind} {what}: the link was made since",
                   c, close=close)  # fmt: skip
    if c.is_update:
        return Fix("acknowledge", c.link_id, f"{c.kind} {what}: not sent again as it "
                   "was; the fields are re-decided from what both sides hold now", c,
                   close=close)  # fmt: skip
    return Fix("reissue", c.link_id, f"{c.kind} {what}: sent again, its marker looked "
               "up first", c, close=close)  # fmt: skip
