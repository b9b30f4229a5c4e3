"""Audit: what in the folded history needs an operator's attention, and how to repair it.

:func:`audit` walks the log once, folding it, and reports each kind of trouble
the design names: links whose two sides disagree at rest, conflicts (resolved
by policy, or left unresolved because the winning write was abandoned),
echoes misread (a value recognised as our own write that we never expected,
or our own write taken for a person's change), commands stuck or abandoned,
and tickets linked on one side only. :func:`compare_remote` adds what the
live APIs show and the log cannot (drift). :func:`plan_repairs` turns
divergences into the writes that would make the sides agree, by the
configured policy. All pure: events and plain values in, findings out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eventstore import RecordedEvent
from projections import kinds
from projections.fold import apply
from projections.state import FIELDS, SIDES, BridgeState, later, other

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
    field: str
    target: str
    value: str
    reason: str


@dataclass
class AuditReport:
    state: BridgeState
    findings: list[Finding] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return any(f.severity == ATTENTION for f in self.findings)


@dataclass(frozen=True)
class Limits:
    """When a pending command counts as stuck: this many failed attempts, or this old."""

    stuck_attempts: int = 3
    stuck_age_events: int = 1000


class _Walk:
    def __init__(self) -> None:
        self.state = BridgeState()
        self.findings: list[Finding] = []
        self.own_writes: set[str] = set()
        self.command_cause: dict[str, str] = {}
        self.conflicts: list[tuple[RecordedEvent, str]] = []
        self.abandoned_causes: set[str] = set()
        self.created: dict[str, int] = {}

    def step(self, event: RecordedEvent) -> None:
        d = event.data
        if event.type in kinds.OBSERVATIONS and d.get("own_write"):
            self.own_writes.add(event.event_id)
        elif event.type == kinds.ECHO_RECOGNISED and d.get("kind") == "field":
            self._echo(event)
        elif event.type in (kinds.FIELD_DECIDED, kinds.CONFLICT_RESOLVED):
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
            if event.type == kinds.CONFLICT_RESOLVED:
                self.conflicts.append((event, event.causation_id or ""))
        elif event.type == kinds.COMMAND_ISSUED:
            self.command_cause[event.event_id] = event.causation_id or ""
        elif event.type == kinds.COMMAND_ABANDONED:
            self.abandoned_causes.add(self.command_cause.get(d.get("command_id", ""), ""))
        elif event.type == kinds.COMMAND_DELIVERED and str(d.get("kind")).endswith("create_ticket"):
            self.created[d.get("link_id", "")] = event.position
        apply(self.state, event)

    def _echo(self, event: RecordedEvent) -> None:
        d = event.data
        link = self.state.links.get(d["link_id"])
        if link is None:
            return
        f = link["fields"][d["field"]]
        if d["value"] not in f[f"expect_{d['side']}"]:
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


def audit(events: Iterable[RecordedEvent], limits: Limits = Limits()) -> AuditReport:
    """Fold ``events`` from position 1 and report everything that needs a look."""
    walk = _Walk()
    for event in events:
        walk.step(event)
    state = walk.state
    findings = list(walk.findings)
    for event, cause in walk.conflicts:
        d = event.data
        unresolved = cause in walk.abandoned_causes
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
    findings.extend(_commands(state, limits))
    findings.extend(_one_sided(state, walk.created))
    return AuditReport(state, findings)


def _busy(state: BridgeState, link_id: str) -> bool:
    return any(c["link_id"] == link_id for c in state.outbox.values())


def _divergent(state: BridgeState) -> Iterable[Finding]:
    for link_id, link in sorted(state.links.items()):
        if link["state"] != "linked" or _busy(state, link_id):
            continue
        for name in FIELDS:
            f = link["fields"][name]
            if f["expect_cw"] or f["expect_soc"] or None in (f["cw"], f["soc"]):
                continue
            if f["cw"] != f["soc"]:
                yield Finding(
                    "divergent",
                    ATTENTION,
                    link_id,
                    f"{name}: ConnectWise has {f['cw']!r}, the SOC has {f['soc']!r}, "
                    "nothing pending",
                    {"field": name, "cw": f["cw"], "soc": f["soc"]},
                )


def _commands(state: BridgeState, limits: Limits) -> Iterable[Finding]:
    for command_id, c in sorted(state.outbox.items()):
        age = state.position - c["issued_at"]
        if c["attempts"] >= limits.stuck_attempts or age >= limits.stuck_age_events:
            yield Finding(
                "command-stuck",
                ATTENTION,
                c["link_id"],
                f"{c['kind']} pending for {age} events, {c['attempts']} attempts, "
                f"last error: {c['last_error']}",
                {"command_id": command_id, "attempts": c["attempts"], "age": age},
            )
    for command_id, c in sorted(state.abandoned.items()):
        yield Finding(
            "command-abandoned",
            ATTENTION,
            c["link_id"],
            f"{c['kind']} abandoned: {c.get('reason')}",
            {"command_id": command_id},
        )


def _one_sided(state: BridgeState, created: Mapping[str, int]) -> Iterable[Finding]:
    for link_id, link in sorted(state.links.items()):
        if link["state"] != "requested":
            continue
        creating = any(
            c["link_id"] == link_id and c["kind"].endswith("create_ticket")
            for c in state.outbox.values()
        )
        if creating:
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
            f"{link['origin']} ticket has no partner: {why}",
            {"origin": link["origin"]},
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
                        f"the {side} ticket {link[f'{side}_id']} is gone",
                    )
                )
                continue
            for name in FIELDS:
                f = link["fields"][name]
                live = values.get(name)
                if live != f[side] and live not in f[f"expect_{side}"]:
                    findings.append(
                        Finding(
                            "remote-drift",
                            ATTENTION,
                            link_id,
                            f"{name} on {side} is {live!r} live, the log knows {f[side]!r}",
                            {"field": name, "side": side, "live": live, "known": f[side]},
                        )
                    )
    return findings


def _winner(f: Mapping[str, Any], policy: str, drifted: set[str]) -> str:
    if len(drifted) == 1:
        return next(iter(drifted))  # the change the log never saw is the newest fact
    if policy in SIDES:
        return policy
    order = later(f["cw_at"], f["soc_at"])
    return "cw" if order > 0 else "soc"


def plan_repairs(
    state: BridgeState,
    policy: Mapping[str, str],
    remote: Mapping[str, Mapping[str, Mapping[str, str] | None]] | None = None,
) -> list[Repair]:
    """The writes that make each divergent field agree, winner by policy (or by drift)."""
    repairs: list[Repair] = []
    for link_id, link in sorted(state.links.items()):
        if link["state"] != "linked" or _busy(state, link_id):
            continue
        live = (remote or {}).get(link_id)
        for name in FIELDS:
            f = link["fields"][name]
            if f["expect_cw"] or f["expect_soc"]:
                continue
            values: dict[str, Any] = {s: f[s] for s in SIDES}
            drifted: set[str] = set()
            if live is not None:
                for s in SIDES:
                    side_values = live.get(s)
                    if side_values is not None and side_values.get(name) != f[s]:
                        values[s] = side_values.get(name)
                        drifted.add(s)
            if None in values.values() or values["cw"] == values["soc"]:
                continue
            winner = _winner(f, policy.get(name, "latest"), drifted)
            repairs.append(
                Repair(
                    link_id,
                    name,
                    other(winner),
                    values[winner],
                    f"{name} differs at rest (cw {values['cw']!r}, soc {values['soc']!r}); "
                    f"{winner} wins" + (" (changed outside the log)" if drifted else ""),
                )
            )
    return repairs
