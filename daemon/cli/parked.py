"""``socbridge retry`` and ``socbridge skip``: let parked commands go again, or drop them.

A command is parked when a desk refuses it for good (a validation rule, a
permission, a ticket that is gone: 400, 403, 404, 409, 410, 422). It waits, and
the later writes of that ticket to that desk wait behind it, until an operator
decides. ``retry`` appends ``admin.command.retried`` per command, ``skip``
appends ``admin.command.skipped``; a running daemon folds them within about a
second (a second writer waits for SQLite's lock), so both are safe while it
runs. ``retry --list`` opens the log read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from daemon.cli.main import EXIT_OK, EXIT_USAGE
from daemon.cli.store import _guarded, add_db_arguments, resolve_db
from daemon.operations.repair import operator_event, retried_data, skipped_data
from daemon.service.applied import operator_name
from eventstore import EventStore, NewEvent
from projections import kinds
from projections.fold import fold
from projections.state import BridgeState, PendingCommand

SOURCE = "socbridge.cli"

_EXIT_CODES = (
    "exit codes: 0 done (or nothing to do), 2 usage error, unknown or not parked\n"
    "command (nothing was changed), 3 event log unusable"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    r = sub.add_parser(
        "retry",
        help="send parked commands again (or --list them)",
        formatter_class=fmt,
        description=(
            "A command a desk refused for good (validation, permission, not found) is\n"
            "parked: it and the later writes of that ticket to that desk wait. Fix the\n"
            "cause (the error names it), then retry: the command is sent again and the\n"
            "ones behind it follow in order. Refused again, it parks again.\n"
            "Safe while the daemon runs.\n\n" + _EXIT_CODES
        ),
        epilog=(
            "examples:\n"
            "  socbridge retry --list --config /etc/socbridge/socbridge.toml\n"
            "  socbridge retry 0b6f...e1 --config socbridge.toml\n"
            "  socbridge retry --ticket cw:4711 --config socbridge.toml\n"
            "  socbridge retry --all --config socbridge.toml --reason 'board rule fixed'"
        ),
    )
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("command_id", nargs="?", metavar="COMMAND_ID", help="a parked command")
    which.add_argument(
        "--ticket", metavar="SIDE:ID", help="every parked command of a ticket (cw:4711, soc:88)"
    )
    which.add_argument("--all", action="store_true", help="every parked command")
    which.add_argument("--list", action="store_true", help="list parked commands, change nothing")
    _common(r)
    r.set_defaults(func=cmd_retry)

    s = sub.add_parser(
        "skip",
        help="drop a parked command (it is never delivered)",
        formatter_class=fmt,
        description=(
            "Drop a parked command: it is never delivered, and the commands that waited\n"
            "behind it go on. Says what was dropped. The two tickets may then disagree on\n"
            "what it would have written: socbridge audit shows it, audit --fix repairs it.\n"
            "Safe while the daemon runs.\n\n" + _EXIT_CODES
        ),
        epilog=(
            "examples:\n"
            "  socbridge skip 0b6f...e1 --config /etc/socbridge/socbridge.toml "
            "--reason 'ticket closed by hand'"
        ),
    )
    s.add_argument("command_id", metavar="COMMAND_ID", help="a parked command (retry --list)")
    _common(s)
    s.set_defaults(func=cmd_skip)


def _common(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("--reason", default=None, help="why (recorded in the event)")
    p.add_argument(
        "--operator", default=None, help="who (recorded; default: the login name, e.g. $USER)"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")


async def _state(path: Path) -> BridgeState:
    if not path.exists():
        return BridgeState()
    store = await EventStore.open(path, readonly=True)
    try:
        return fold([e async for e in store.read()])
    finally:
        await store.close()


def describe(command: PendingCommand, state: BridgeState) -> dict[str, Any]:
    """One parked (or pending) command as ``retry --list`` shows it."""
    link = state.links.get(command.link_id)
    target = link.ticket_id(command.target) if link is not None else None
    parked = command.parked
    return {
        "command_id": command.command_id,
        "kind": command.kind,
        "link_id": command.link_id,
        "tenant": command.tenant,
        "ticket": f"{command.target}:{target}" if target is not None else None,
        "what": _what(command),
        "remote_status": parked.remote_status if parked else None,
        "reason": parked.message if parked else command.last_error,
        "parked_at": parked.parked_at if parked else None,
        "attempts": command.attempts,
        "waiting_behind": sum(
            o.lane == command.lane and o is not command for o in state.outbox.values()
        ),
    }


def _what(command: PendingCommand) -> str:
    writes = command.field_writes()
    if writes:
        return ", ".join(f"{name} -> {value!r}" for name, value in writes.items())
    if command.is_note:
        text = command.params.get("text") or command.params.get("body") or ""
        body = str(text).strip().splitlines()
        return f"note {body[0][:60]!r}" if body else "note"
    return command.action.replace("_", " ")


def _selected(args: argparse.Namespace, state: BridgeState) -> list[PendingCommand] | str:
    """The parked commands ``args`` name, or an error message."""
    parked = state.parked()
    if args.all:
        return parked
    if args.ticket:
        side, _, ticket = str(args.ticket).partition(":")
        if side not in ("cw", "soc") or not ticket.isdigit():
            return f"--ticket {args.ticket!r}: expected cw:ID or soc:ID, e.g. cw:4711"
        link = state.link_for("cw" if side == "cw" else "soc", ticket)
        if link is None:
            return f"no link has {side} ticket {ticket} (socbridge events --ticket lists links)"
        return [c for c in parked if c.link_id == link.link_id]
    command = state.outbox.get(args.command_id)
    if command is None:
        gone = state.abandoned.get(args.command_id)
        hint = f" (it was abandoned: {gone.reason})" if gone is not None else ""
        return (
            f"no pending command {args.command_id}{hint}; "
            "socbridge retry --list shows the parked ones"
        )
    if command.parked is None:
        return (
            f"command {args.command_id} is not parked: the outbox is still on it "
            f"({command.attempts} attempts, last error: {command.last_error or 'none'})"
        )
    return [command]


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        sys.stdout.write(orjson.dumps({"ok": False, "error": message}).decode() + "\n")
    print(f"socbridge: error: {message} (nothing was changed)", file=sys.stderr)
    return EXIT_USAGE


async def _append(path: Path, events: list[NewEvent]) -> None:
    store = await EventStore.open(path)
    try:
        await store.append(events)
    finally:
        await store.close()


def cmd_retry(args: argparse.Namespace) -> int:
    def action() -> int:
        path = resolve_db(args)
        state = asyncio.run(_state(path))
        if args.list:
            return _list(args, state)
        chosen = _selected(args, state)
        if isinstance(chosen, str):
            return _fail(args, chosen)
        who = operator_name(args.operator)
        events = [
            operator_event(c, kinds.COMMAND_RETRIED, retried_data(c, who, args.reason), SOURCE)
            for c in chosen
        ]
        if events:
            asyncio.run(_append(path, events))
        shown = [describe(c, state) for c in chosen]
        if args.json:
            sys.stdout.write(orjson.dumps({"ok": True, "retried": shown}).decode() + "\n")
            return EXIT_OK
        if not shown:
            print("nothing is parked; nothing to retry")
        for d in shown:
            behind = f", then the {d['waiting_behind']} behind it" if d["waiting_behind"] else ""
            print(f"retry {d['command_id']}: {d['kind']} of {d['link_id']} ({d['what']}){behind}")
        if shown:
            print("a running daemon sends them within seconds; refused again, they park again")
        return EXIT_OK

    return _guarded(action, "cannot read the event log")


def _list(args: argparse.Namespace, state: BridgeState) -> int:
    shown = [describe(c, state) for c in state.parked()]
    if args.json:
        sys.stdout.write(orjson.dumps({"parked": shown}).decode() + "\n")
        return EXIT_OK
    if not shown:
        print("nothing is parked")
        return EXIT_OK
    for d in shown:
        print(
            f"{d['command_id']}  {d['kind']:<18} {d['link_id']:<12} {d['ticket'] or '-':<12} "
            f"#{d['parked_at']}  {d['what']}\n"
            f"    {d['reason']}"
            + (f"\n    {d['waiting_behind']} more wait behind it" if d["waiting_behind"] else "")
        )
    print(f"{len(shown)} parked; socbridge retry COMMAND_ID|--ticket SIDE:ID|--all, "
          "or socbridge skip COMMAND_ID")  # fmt: skip
    return EXIT_OK


def cmd_skip(args: argparse.Namespace) -> int:
    def action() -> int:
        path = resolve_db(args)
        state = asyncio.run(_state(path))
        args.all = False
        args.ticket = None
        chosen = _selected(args, state)
        if isinstance(chosen, str):
            return _fail(args, chosen)
        [command] = chosen
        d = describe(command, state)
        data = skipped_data(command, operator_name(args.operator), args.reason)
        asyncio.run(_append(path, [operator_event(command, kinds.COMMAND_SKIPPED, data, SOURCE)]))
        if args.json:
            sys.stdout.write(orjson.dumps({"ok": True, "skipped": d}).decode() + "\n")
            return EXIT_OK
        print(
            f"skipped {d['command_id']}: {d['kind']} of {d['link_id']} ({d['what']}) will not "
            "be delivered"
            + (f"; the {d['waiting_behind']} behind it go on" if d["waiting_behind"] else "")
        )
        print("socbridge audit shows whether the two tickets now disagree; audit --fix repairs")
        return EXIT_OK

    return _guarded(action, "cannot read the event log")
