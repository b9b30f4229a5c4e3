"""What each console page shows, computed from the daemon's projections.

Pure functions from the :class:`~daemon.console.sources.Bridge` (and, for a
ticket's timeline and the configuration history, the streams they name) to
typed rows the templates render. Nothing here scans the log.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from typing import Literal

from daemon.console.explain import explain, moment
from daemon.console.sources import Bridge, DeskHealth
from daemon.service.config import Config
from eventstore import RecordedEvent
from projections.state import BridgeState, Link, PendingCommand, Side

SIDE_LABEL: dict[Side, str] = {"cw": "ConnectWise", "soc": "SOC desk"}


def ago(seconds: float | None) -> str:
    """``'42 s ago'``, ``'3 min ago'``, ``'2 h ago'``; ``'never'`` for ``None``."""
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def since(at: float | None) -> str:
    return ago(None if at is None else max(0.0, time.time() - at))


def duration(seconds: float) -> str:
    return ago(seconds).removesuffix(" ago")


#: A ConnectWise Manage ticket's page in its web client, by the ticket's record id.
CW_TICKET_PAGE = "v4_6_release/services/system_io/Service/fv_sr100_request.rails"


def ticket_url(config: Config, side: Side, ticket_id: int | None) -> str | None:
    """Where a person opens the ticket in the desk's own web interface."""
    if ticket_id is None:
        return None
    if side == "cw":
        base = str(config.connectwise.site_url).rstrip("/")
        return f"{base}/{CW_TICKET_PAGE}?service_recid={ticket_id}"
    return f"{str(config.soc.url).rstrip('/')}/agent/tickets/{ticket_id}"


# ------------------------------------------------------------------ overview


@dataclass(frozen=True)
class DeskRow:
    health: DeskHealth
    pending: int
    oldest_pending_s: float

    @property
    def reachable_text(self) -> str:
        h = self.health
        when = h.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if h.reachable:
            return f"reachable since {when}"
        return f"not reachable: {h.down_reason} since {when}"


@dataclass(frozen=True)
class TenantRow:
    name: str
    sync_on: bool
    links: dict[str, int]
    cw_company_id: int
    soc_organization_id: int


@dataclass(frozen=True)
class Overview:
    desks: list[DeskRow]
    tenants: list[TenantRow]
    lag: int
    parked: int
    abandoned: int
    links: int
    #: What is wrong, in words; empty when healthy.
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems


def pending_by_side(bridge: Bridge, state: BridgeState) -> dict[Side, tuple[int, float]]:
    """Per desk: commands waiting to go there, and how long the oldest that should be going
    out has waited (as ``/readyz`` and the metric count it: parked lanes and switched-off
    tenants wait as asked)."""
    counts = Counter(command.target for command in state.outbox.values())
    waited = bridge.oldest_waiting()
    return {side: (counts[side], waited.get(side, 0.0)) for side in ("cw", "soc")}


def tenant_rows(bridge: Bridge, state: BridgeState) -> list[TenantRow]:
    by_tenant: dict[str, Counter[str]] = {}
    for link in state.links.values():
        by_tenant.setdefault(link.tenant, Counter())[link.state] += 1
    return [
        TenantRow(
            t.name, bridge.tenant_enabled(t.name), dict(by_tenant.get(t.name, Counter())),
            t.cw_company_id, t.soc_organization_id,
        )
        for t in bridge.config().tenants
    ]  # fmt: skip


async def overview(bridge: Bridge) -> Overview:
    state = bridge.state()
    config = bridge.config()
    pending = pending_by_side(bridge, state)
    desks = [DeskRow(h, *pending[h.side]) for h in bridge.desks()]
    lag = await bridge.lag()
    problems: list[str] = []
    for d in desks:
        if not d.health.reachable:
            problems.append(f"{d.health.label} is {d.reachable_text}.")
        if d.oldest_pending_s > config.health.max_pending_age_seconds:
            problems.append(
                f"A command to {d.health.label} has waited {duration(d.oldest_pending_s)}."
            )
    parked = len(state.parked())
    if parked:
        problems.append(f"{parked} command(s) parked: a desk refused them; see Problems.")
    if state.abandoned:
        problems.append(
            f"{len(state.abandoned)} command(s) abandoned (never delivered); see Problems."
        )
    if lag > config.health.max_decision_lag_events:
        problems.append(f"Sync is {lag} events behind the log.")
    if state.removed:
        problems.append("The integration was removed (socbridge remove): nothing is synced.")
    tenants = tenant_rows(bridge, state)
    # A tenant the configuration keeps off is as intended; one an operator switched off
    # is worth a glance (its changes are not synced until it is switched on again).
    off = [t.name for t in tenants if not t.sync_on and state.tenant_switches.get(t.name) is False]
    if off:
        problems.append(f"Sync was switched off by an operator for {', '.join(off)}.")
    return Overview(desks, tenants, lag, parked, len(state.abandoned), len(state.links), problems)


# ------------------------------------------------------------------ problems


@dataclass(frozen=True)
class ProblemRow:
    kind: Literal["parked", "abandoned", "unlinked", "conflict", "ambiguity storm"]
    link_id: str
    tenant: str | None
    cw_id: int | None
    soc_id: int | None
    cw_url: str | None
    soc_url: str | None
    what: str
    error: str
    position: int
    command_id: str | None = None
    actions: tuple[str, ...] = ()
    when: str = ""


def describe_command(command: PendingCommand) -> str:
    """What a command does, in words."""
    writes = command.field_writes()
    desk = SIDE_LABEL[command.target]
    if writes:
        return f"write {', '.join(f'{k} {v!r}' for k, v in writes.items())} to {desk}"
    if command.is_note:
        text = str(command.params.get("text") or command.params.get("body") or "").strip()
        first = text.splitlines()[0][:60] if text else ""
        return f"add a note to {desk}" + (f": {first!r}" if first else "")
    if command.is_create:
        return f"create the partner ticket on {desk}"
    if command.is_fetch:
        return f"read the ticket again on {desk}"
    return f"{command.action.replace('_', ' ')} on {desk}"


ProblemKind = Literal["parked", "abandoned", "unlinked", "conflict", "ambiguity storm"]


def _row(
    config: Config, link: Link | None, kind: ProblemKind,
    link_id: str, what: str, error: str, position: int, command_id: str | None,
    actions: tuple[str, ...],
) -> ProblemRow:  # fmt: skip
    cw = link.cw_id if link else None
    soc = link.soc_id if link else None
    return ProblemRow(
        kind, link_id, link.tenant if link else None, cw, soc,
        ticket_url(config, "cw", cw), ticket_url(config, "soc", soc),
        what, error, position, command_id, actions,
    )  # fmt: skip


def problems(bridge: Bridge, answered: set[str]) -> list[ProblemRow]:
    """Parked commands, abandoned ones nobody answered yet, and unlinked links; newest first.

    ``answered``: abandoned commands already sent again or acknowledged (from the repair
    decisions of their links' streams).
    """
    state, config = bridge.state(), bridge.config()
    rows: list[ProblemRow] = []
    for c in state.parked():
        assert c.parked is not None
        link = state.links.get(c.link_id)
        rows.append(_row(
            config, link, "parked", c.link_id, describe_command(c),
            f"{SIDE_LABEL[c.target]} refused it ({c.parked.remote_status}): {c.parked.message}",
            c.parked.parked_at, c.command_id, ("retry", "skip", "reread"),
        ))  # fmt: skip
    for command_id, a in state.abandoned.items():
        if command_id in answered:
            continue
        c = a.command
        link = state.links.get(c.link_id)
        rows.append(_row(
            config, link, "abandoned", c.link_id, describe_command(c),
            f"not delivered ({c.attempts} attempt(s)): {a.reason}", a.abandoned_at,
            command_id, ("retry", "skip", "reread"),
        ))  # fmt: skip
    for link in state.links.values():
        if link.state == "unlinked":
            rows.append(_row(
                config, link, "unlinked", link.link_id, "the two tickets are no longer synced",
                link.unlinked_reason or "unlinked", link.unlinked_at or 0, None, (),
            ))  # fmt: skip
    for event in bridge.activity.conflicts():
        link_id = str(event.data.get("link_id") or event.ticket or "")
        rows.append(_row(
            config, state.links.get(link_id), "conflict", link_id, explain(event, None),
            "both desks changed the same field: the policy chose (nothing to fix unless the "
            "choice was wrong)", event.position, None, ("reread",),
        ))  # fmt: skip
    for storm in bridge.activity.storms():
        rows.append(_row(
            config, state.links.get(storm.link_id), "ambiguity storm", storm.link_id,
            f"{storm.count} changes in the same second as the known value in 24 h, each "
            "needing a read of the ticket", "two writers may be fighting over a field (an "
            "automation rule, another integration): each costs an API read",
            storm.last.position, None, ("reread",),
        ))  # fmt: skip
    rows.sort(key=lambda r: r.position, reverse=True)
    return rows


# ------------------------------------------------------------------ links


@dataclass(frozen=True)
class SideView:
    ticket_id: int | None
    url: str | None
    status: str | None
    priority: str | None
    last_change: str | None


@dataclass(frozen=True)
class LinkRow:
    link_id: str
    tenant: str
    state: str
    origin: str
    cw: SideView
    soc: SideView
    pending: int


def _side_view(config: Config, link: Link, side: Side) -> SideView:
    status, priority = link.fields.get("status"), link.fields.get("priority")
    stamps = [
        s for s in (
            status.side(side).changed_at if status else None,
            priority.side(side).changed_at if priority else None,
        ) if s
    ]  # fmt: skip
    ticket_id = link.ticket_id(side)
    return SideView(
        ticket_id, ticket_url(config, side, ticket_id),
        status.side(side).value if status else None,
        priority.side(side).value if priority else None,
        max(stamps) if stamps else None,
    )  # fmt: skip


def link_row(config: Config, link: Link, pending: int) -> LinkRow:
    """One link as Links and its timeline show it; ``pending``: its commands waiting."""
    return LinkRow(
        link.link_id, link.tenant, link.state, SIDE_LABEL[link.origin],
        _side_view(config, link, "cw"), _side_view(config, link, "soc"), pending,
    )  # fmt: skip


@dataclass(frozen=True)
class LinkSearch:
    q: str = ""
    tenant: str = ""
    state: str = ""
    page: int = 1


@dataclass(frozen=True)
class LinkPage:
    rows: list[LinkRow]
    total: int
    search: LinkSearch
    pages: int
    states: list[str] = field(default_factory=lambda: ["requested", "linked", "unlinked"])


PAGE_SIZE = 100


def links(bridge: Bridge, search: LinkSearch) -> LinkPage:
    """Links matching a ticket id (either desk, or the link id), tenant and state."""
    state, config = bridge.state(), bridge.config()
    q = search.q.strip().removeprefix("#")
    side, _, ident = q.partition(":")
    if q and ident and side in ("cw", "soc"):
        link = state.link_for("cw" if side == "cw" else "soc", ident)
        found = [link] if link is not None else []
    elif q.isdigit():
        found = [x for x in (state.link_for("cw", q), state.link_for("soc", q)) if x is not None]
    elif q:
        found = [state.links[q]] if q in state.links else []
    else:
        found = list(state.links.values())
    found = [
        x for x in found
        if (not search.tenant or x.tenant == search.tenant)
        and (not search.state or x.state == search.state)
    ]  # fmt: skip
    found.sort(key=lambda x: x.requested_at, reverse=True)
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(max(1, search.page), pages)
    shown = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    pending = Counter(c.link_id for c in state.outbox.values())
    return LinkPage(
        [link_row(config, x, pending[x.link_id]) for x in shown], len(found),
        LinkSearch(search.q, search.tenant, search.state, page), pages,
    )  # fmt: skip


# ------------------------------------------------------------------ config


@dataclass(frozen=True)
class AppliedRow:
    position: int
    recorded_at: str
    reason: str
    hash: str
    changed: list[str]
    path: str | None


def applied_rows(events: list[RecordedEvent]) -> list[AppliedRow]:
    return [
        AppliedRow(
            e.position, e.recorded_at[:19].replace("T", " "), str(e.data.get("reason") or ""),
            str(e.data.get("hash") or "")[:12], [str(k) for k in e.data.get("changed") or []],
            e.data.get("path"),
        )
        for e in reversed(events)
    ]  # fmt: skip


def when(recorded_at: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS UTC`` (what is not a time is shown as it is)."""
    at = moment(recorded_at)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else recorded_at or ""
