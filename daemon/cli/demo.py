"""``socbridge demo``: the scripted story, checked step by step against both simulators.

It starts both simulators and the daemon in a temp folder (as ``sim all``
and ``run`` would), plays an incident's life through the technician in
ConnectWise and the analyst on the SOC desk, checks every step on both
sides, prints the timeline the event log holds, and exits 0 only if every
step held.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM
from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.harness import Bridge
from eventstore import verify
from projections import kinds

Step = Callable[[Bridge, dict[str, Any]], Awaitable[str]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="play a scripted incident story against the built-in simulators",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start both simulators and the daemon in a temp folder, play an incident's life\n"
            "(both directions, notes with a filtered one, solve and reopen, a conflict, unlink),\n"
            "check each step on both sides and print the event log's timeline.\n\n"
            "exit codes: 0 every step held, 1 a step failed"
        ),
        epilog="example:\n  socbridge demo\n  socbridge demo --keep ./demo-run",
    )
    p.add_argument("--keep", type=Path, default=None, help="folder to keep the run in")
    p.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the story, keep the daemon and its console up until Ctrl-C "
        "(default: when run on a terminal)",
    )
    p.add_argument(
        "--console-port", type=int, default=8790, help="the console's port (default 8790)"
    )
    p.set_defaults(func=cmd_demo)


async def _soc_incident(b: Bridge, ctx: dict[str, Any]) -> str:
    soc = await b.analyst.create_ticket(
        "Impossible travel for j.doe@acme", "Sign-ins from Lisbon and Osaka within 5 minutes",
        priority="urgent",
    )  # fmt: skip
    ctx["soc_a"] = soc["id"]

    async def created() -> Any:
        found = await b.technician.tickets(f"externalXRef = 'socbridge:soc:{soc['id']}'")
        return found[0] if found else None

    cw = await b.until(created, "the ConnectWise ticket for the SOC incident")
    ctx["cw_a"] = cw["id"]
    assert cw["board"]["name"] == "SOC Incidents", cw["board"]
    assert cw["priority"]["name"] == "Priority 1 - Emergency Response", cw["priority"]
    assert cw["source"]["name"] == "SOC Platform", cw.get("source")
    return f"SOC incident {soc['id']} -> ConnectWise ticket {cw['id']} (board, P1, source)"


async def _routed_ticket(b: Bridge, ctx: dict[str, Any]) -> str:
    cw = await b.technician.create_ticket(
        "EDR: suspicious PowerShell on ACME-WS17", priority="Priority 2 - Quick Response"
    )
    ctx["cw_b"] = cw["id"]

    async def created() -> Any:
        for t in await b.analyst.tickets():
            if t.get("external_id") == f"socbridge:cw:{cw['id']}":
                return t
        return None

    soc = await b.until(created, "the SOC ticket for the routed ConnectWise ticket")
    ctx["soc_b"] = soc["id"]
    assert soc["organization_id"] == 9001 and soc["priority"] == "high", soc
    return f"routed ConnectWise ticket {cw['id']} -> SOC ticket {soc['id']} (org, high)"


async def _notes(b: Bridge, ctx: dict[str, Any]) -> str:
    await b.settled()
    await b.analyst.comment(ctx["soc_b"], "Please isolate ACME-WS17 from the network.")
    await b.technician.note(ctx["cw_b"], "Host isolated at 10:42.", "Discussion")
    await b.technician.note(ctx["cw_b"], "User is on the exec team.", "Internal Analysis")

    async def mirrored() -> bool:
        notes = await b.technician.notes(ctx["cw_b"])
        comments = await b.analyst.comments(ctx["soc_b"])
        return any("isolate ACME-WS17" in n["text"] for n in notes) and any(
            "Host isolated" in c["body"] for c in comments
        )

    await b.until(mirrored, "the reply and the note to cross over")
    await b.settled()
    comments = await b.analyst.comments(ctx["soc_b"])
    assert not any("exec team" in c["body"] for c in comments), "Internal Analysis leaked"
    return "SOC reply -> Discussion note; Discussion note -> SOC comment; Internal Analysis kept"


async def _solve_reopen(b: Bridge, ctx: dict[str, Any]) -> str:
    await b.analyst.set(ctx["soc_b"], status="solved")

    async def cw_is(name: str) -> bool:
        return bool((await b.technician.ticket(ctx["cw_b"]))["status"]["name"] == name)

    await b.until(lambda: cw_is("Solved"), "ConnectWise Solved")
    await b.settled()
    await b.analyst.set(ctx["soc_b"], status="open")
    await b.until(lambda: cw_is("Unresolved"), "ConnectWise Unresolved")
    await b.settled()
    return "SOC solved -> ConnectWise Solved; SOC reopened -> ConnectWise Unresolved"


async def _conflict(b: Bridge, ctx: dict[str, Any]) -> str:
    # Both sides change the priority while the daemon is down: a concurrent change.
    await b.stop_daemon()
    await b.technician.set(ctx["cw_a"], priority="Priority 4 - Schedule Maintenance")
    await b.analyst.set(ctx["soc_a"], priority="high")
    await b.start_daemon()

    async def agreed() -> bool:
        cw = await b.technician.ticket(ctx["cw_a"])
        soc = await b.analyst.ticket(ctx["soc_a"])
        return (
            b.engine.state.conflicts > 0
            and cw["priority"]["name"] == "Priority 2 - Quick Response"
            and soc["priority"] == "high"
        )

    await b.until(agreed, "the conflict to be resolved (the SOC wins priority)")
    await b.settled()
    assert await agreed(), "the two sides disagree after the conflict settled"
    return "priority changed on both sides -> conflict recorded, the SOC's 'high' wins on both"


async def _unlink(b: Bridge, ctx: dict[str, Any]) -> str:
    # ConnectWise fails this ticket's notes for a while (503): the analyst's reply waits in
    # the outbox, retried, when the technician unlinks the ticket.
    assert b.rehearsal is not None
    outage = ApiFault(503, 1_000_000, method="POST", path_contains=f"tickets/{ctx['cw_b']}/notes")
    b.rehearsal.cw.faults.api.append(outage)
    await b.analyst.comment(ctx["soc_b"], "Is the host isolated yet?")

    async def reply_failed() -> bool:
        return any(c.attempts > 0 and c.is_note for c in b.engine.state.outbox.values())

    await b.until(reply_failed, "the reply's delivery to fail")
    await b.technician.set(ctx["cw_b"], status="Unlinked")

    async def unlinked() -> bool:
        link = b.engine.state.link_for("cw", ctx["cw_b"])
        return link is not None and link.state == "unlinked"

    await b.until(unlinked, "the link to be unlinked")
    b.rehearsal.cw.faults.api.remove(outage)

    async def abandoned() -> bool:
        return any(a.command.is_note for a in b.engine.state.abandoned.values())

    await b.until(abandoned, "the waiting reply to be abandoned")
    await b.analyst.comment(ctx["soc_b"], "Still there?")
    await b.settled()
    notes = await b.technician.notes(ctx["cw_b"])
    assert not any("Still there?" in n["text"] for n in notes), "synced after unlink"
    return (
        "ConnectWise Unlinked -> sync stops for good; the reply still waiting for "
        "ConnectWise is abandoned (the console's Problems lists it)"
    )


STORY: list[tuple[str, Step]] = [
    ("SOC incident -> ConnectWise ticket", _soc_incident),
    ("routed ConnectWise ticket -> SOC ticket", _routed_ticket),
    ("notes both ways, one filtered", _notes),
    ("solve and reopen", _solve_reopen),
    ("a conflict", _conflict),
    ("unlink", _unlink),
]

_SHOWN = {
    kinds.CW_TICKET_OBSERVED, kinds.CW_NOTE_OBSERVED, kinds.SOC_TICKET_OBSERVED,
    kinds.SOC_COMMENT_OBSERVED, kinds.LINK_REQUESTED, kinds.LINKED, kinds.UNLINKED,
    kinds.FIELD_DECIDED, kinds.NOTE_MIRROR_DECIDED, kinds.NOTE_SKIPPED, kinds.ECHO_RECOGNISED,
    kinds.CONFLICT_RESOLVED, kinds.COMMAND_ISSUED, kinds.COMMAND_DELIVERED,
    kinds.COMMAND_FAILED, kinds.COMMAND_ABANDONED, kinds.COMMAND_PARKED,
}  # fmt: skip


def _describe(data: dict[str, Any]) -> str:
    keys = ("kind", "field", "side", "value", "winner", "status", "priority", "note_key",
            "reason", "section", "cw_id", "soc_id")  # fmt: skip
    parts = [f"{k}={data[k]}" for k in keys if data.get(k) not in (None, "", {})]
    return " ".join(parts)[:90]


async def _timeline(b: Bridge) -> None:
    print("\ntimeline (from the event log):")
    async for e in b.store.read():
        if e.type in _SHOWN:
            print(f"  {e.position:>4}  {e.tenant or '-':<6} {e.ticket or '-':<12} {e.type:<30} "
                  f"{_describe(e.data)}")  # fmt: skip


async def run_demo(folder: Path | None, *, serve: bool = False, console_port: int = 0) -> int:
    failures = 0
    async with Bridge(folder, console_port=_free_or_any(console_port)) as b:
        print(f"socbridge demo in {b.folder}")
        print(f"  ConnectWise simulator {b.rehearsal.cw.url if b.rehearsal else ''}")
        print(f"  SOC simulator         {b.rehearsal.soc.url if b.rehearsal else ''}\n")
        ctx: dict[str, Any] = {}
        for title, step in STORY:
            started = time.monotonic()
            try:
                detail = await step(b, ctx)
            except (AssertionError, TimeoutError, RuntimeError) as exc:
                failures += 1
                print(f"  FAIL  {title}: {exc}")
                break
            print(f"  ok    {title}: {detail} ({time.monotonic() - started:.1f}s)")
        await _timeline(b)
        report = await verify(b.store)
        print(f"\nevent log: {report.checked} events, chain {'intact' if report.ok else 'BROKEN'}")
        failures += 0 if report.ok else 1
        print("\ndemo: every step held" if not failures else "\ndemo: FAILED")
        print(f"\nconsole: {b.console_url}")
        if serve:
            print("  open it in a browser (the links, and the abandoned reply in Problems);")
            print("  the daemon and both simulators run until Ctrl-C", flush=True)
            await _until_interrupted()
        else:
            print("  (served while the demo runs; socbridge demo on a terminal keeps it up)")
    return EXIT_OK if not failures else EXIT_PROBLEM


def _free_or_any(port: int) -> int | None:
    """``port`` when nothing listens there, else ``None`` (a free port is picked)."""
    import socket

    if port == 0:
        return None
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


async def _until_interrupted() -> None:
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def cmd_demo(args: argparse.Namespace) -> int:
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    serve = args.serve if args.serve is not None else sys.stdin.isatty() and sys.stdout.isatty()
    code = await run_demo(args.keep, serve=serve, console_port=args.console_port)
    sys.stdout.flush()
    return code
