"""``socbridge events``: a ticket's, link's or tenant's whole timeline, readable at a glance.

One line per event in log order: position, time, tenant, ticket, type, the
event it was caused by (``<-#pos``, so a decision points at the observation
it was made on and an outcome at its command) and a short summary of its
data. Filters narrow by tenant, ticket (``cw:123``, ``soc:456`` or a link
id: a ticket's timeline gathers its link's decisions and both sides'
observations), type (prefix) and time. ``--json`` prints one object per
line; ``--follow`` keeps watching the log. Colour only on a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson

from daemon.cli.main import EXIT_OK, EXIT_USAGE
from daemon.cli.store import _guarded, add_db_arguments, resolve_db
from eventstore import EventStore, RecordedEvent
from projections import kinds
from projections.fold import apply, fold
from projections.state import BridgeState, is_side

_COLOURS = {"observed": "36", "sync": "33", "outbox": "32", "failed": "31", "admin": "35"}


def _when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO time: {text!r} (e.g. 2026-11-29T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return moment


def _ticket(text: str) -> str:
    side, _, ident = text.partition(":")
    if side not in ("cw", "soc") or not ident.isdigit():
        raise argparse.ArgumentTypeError(f"a ticket is cw:ID or soc:ID, not {text!r}")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "events",
        help="show the event timeline of a ticket, link or tenant",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Print events in log order: what arrived, what was decided (and what caused it:\n"
            "'<-#12' means caused by the event at position 12), what was delivered or failed.\n"
            "Opens the log read-only; safe while the daemon runs.\n\n"
            "exit codes: 0 shown (also when nothing matched), 2 bad option or configuration,\n"
            "3 the log cannot be opened"
        ),
        epilog=(
            "examples:\n"
            "  socbridge events --config socbridge.toml --ticket cw:1001\n"
            "  socbridge events --db events.db --tenant acme --type sync.\n"
            "  socbridge events --db events.db --since 2026-11-29T08:00Z --until 2026-11-29T09Z\n"
            "  socbridge events --db events.db --json | jq .type\n"
            "  socbridge events --db events.db --follow"
        ),
    )
    add_db_arguments(p)
    p.add_argument("--tenant", help="only this tenant's events")
    p.add_argument(
        "--ticket", type=_ticket, help="cw:ID or soc:ID: that ticket's link and both sides"
    )
    p.add_argument("--type", help="only event types starting with this (e.g. sync. or outbox.)")
    p.add_argument("--since", type=_when, help="only events recorded at or after this time")
    p.add_argument("--until", type=_when, help="only events recorded at or before this time")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.set_defaults(func=cmd_events)


@dataclass
class Filter:
    tenant: str | None = None
    tickets: frozenset[str] | None = None
    type_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, event: RecordedEvent) -> bool:
        if self.tenant is not None and event.tenant != self.tenant:
            return False
        if self.tickets is not None and event.ticket not in self.tickets:
            return False
        if self.type_prefix is not None and not event.type.startswith(self.type_prefix):
            return False
        if self.since is not None or self.until is not None:
            at = _when(event.recorded_at)
            if (self.since and at < self.since) or (self.until and at > self.until):
                return False
        return True


def ticket_keys(state: BridgeState, ticket: str) -> frozenset[str]:
    """The ticket keys of one ticket's timeline: its link and both sides' observations."""
    side, _, ident = ticket.partition(":")
    link = (state.link_for(side, ident) if is_side(side) else None) or state.links.get(ticket)
    return frozenset({ticket}) if link is None else link.ticket_keys()


def _summary(event: RecordedEvent) -> str:
    d = event.data
    if "field" in d and "value" in d:
        text = f"{d['field']}={d['value']} from {d.get('side')}"
        if d.get("writes"):
            text += " -> write " + ", ".join(f"{k}={v}" for k, v in d["writes"].items())
        if "winner" in d:
            text += f" (conflict: {d['policy']} policy, {d['winner']} wins)"
        return text
    parts = []
    keys = ("kind", "origin", "cw_id", "soc_id", "status", "priority", "target", "note_key")
    for key in (*keys, "reason", "error", "attempt", "id"):
        if d.get(key) not in (None, ""):
            parts.append(f"{key}={d[key]}")
    return " ".join(parts)


def _colour(event: RecordedEvent) -> str:
    if (
        event.type.endswith(("failed", "abandoned", "parked", "rejected"))
        or "conflict" in event.type
    ):
        return _COLOURS["failed"]
    if event.type.endswith("observed"):
        return _COLOURS["observed"]
    return _COLOURS.get(event.type.split(".", 1)[0], "0")


class Printer:
    """Formats events as aligned columns (or JSON lines), remembering causes' positions."""

    def __init__(self, out: IO[str], *, as_json: bool, colour: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.colour = colour
        self.positions: dict[str, int] = {}

    def remember(self, event: RecordedEvent) -> None:
        self.positions[event.event_id] = event.position

    def header(self) -> None:
        if not self.as_json:
            line = f"{'POS':>6}  {'RECORDED':<20}  {'TENANT':<10}  {'TICKET':<10}  "
            self.out.write(f"{line}{'TYPE':<28}  {'CAUSE':<7}  SUMMARY\n")

    def show(self, event: RecordedEvent) -> None:
        cause = self.positions.get(event.causation_id or "")
        if self.as_json:
            doc: dict[str, Any] = event._asdict()
            doc["caused_by_position"] = cause
            self.out.write(orjson.dumps(doc).decode() + "\n")
        else:
            kind = f"{event.type:<28}"
            if self.colour:
                kind = f"\x1b[{_colour(event)}m{kind}\x1b[0m"
            where = "<-#" + str(cause) if cause else ("<-?" if event.causation_id else "")
            self.out.write(
                f"{event.position:>6}  {event.recorded_at[:19]:<20}  {event.tenant or '-':<10}  "
                f"{event.ticket or '-':<10}  {kind}  {where:<7}  {_summary(event)}".rstrip()
                + "\n"
            )
        self.out.flush()


async def show_events(
    store: EventStore,
    args: argparse.Namespace,
    out: IO[str],
    *,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print the filtered timeline to ``out``; with ``follow``, keep going until cancelled."""
    events = [e async for e in store.read()]
    state = fold(events)
    tickets = ticket_keys(state, args.ticket) if args.ticket else None
    match = Filter(args.tenant, tickets, args.type, args.since, args.until)
    printer = Printer(out, as_json=args.json, colour=not args.json and out.isatty())
    printer.header()
    for event in events:
        printer.remember(event)
        if match(event):
            printer.show(event)
    if args.follow:
        last = events[-1].position if events else 0
        async for event in store.subscribe(last + 1):
            apply(state, event)
            if args.ticket and event.type in (kinds.LINK_REQUESTED, kinds.LINKED):
                match.tickets = ticket_keys(state, args.ticket)  # a partner was linked
            printer.remember(event)
            if match(event):
                printer.show(event)
            if stop():
                break
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    if args.since and args.until and args.since > args.until:
        print("socbridge: error: --since is after --until", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        store = await EventStore.open(resolve_db(args), readonly=True)
        try:
            return await show_events(store, args, sys.stdout)
        finally:
            await store.close()

    return _guarded(lambda: asyncio.run(run()), "cannot read the event log")
