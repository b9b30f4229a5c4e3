"""``socbridge audit``: what in the history (and with ``--remote`` live) needs attention.

The report starts with ``verify``'s check of the log's hash chain, then lists
every finding of :func:`projections.audit.audit` (divergent links, conflicts,
misread echoes, stuck or abandoned commands, tickets linked on one side
only), and with ``--remote`` the drift between the live tickets and the
projections. ``--fix`` appends repair decisions and what they imply (field
writes, commands re-sent with their markers or closed, unlinks of links whose
partner is gone), which the running daemon's outbox delivers; history is
never rewritten. Exit code 0
when nothing needs attention, 1 when something does, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from daemon.cli.progress import NO_BARS, Bars, read_log, wanted
from daemon.cli.store import _guarded, add_db_arguments, resolve_db
from daemon.connectors.connectwise.errors import ConnectWiseError
from daemon.connectors.soc.errors import SocError
from daemon.operations.remote_audit import Remote, clients, fetch_orphans, fetch_remote
from daemon.operations.repair import apply_fixes, apply_repairs
from daemon.service.config import Config, load_config
from daemon.sync.rules import rules_from_config
from eventstore import EventStore, verify
from eventstore.anchors import anchors_path, read_anchors
from projections import kinds
from projections.audit import (
    Limits,
    Orphan,
    audit,
    compare_remote,
    orphan_findings,
    plan_fixes,
    plan_repairs,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="find divergences, conflicts, stuck commands; --fix appends repairs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Verify the log's chain, then fold it and list what needs attention: divergent\n"
            "links (sides disagree with nothing pending), conflicts (resolved by policy, or\n"
            "unresolved), echoes misread, commands stuck or abandoned, tickets linked on one\n"
            "side only. --remote also reads both live APIs and compares them with the log.\n\n"
            "--fix appends repair decisions (sync.repair.decided) and the commands they\n"
            "imply; the daemon's outbox delivers them. History is never rewritten:\n"
            "  divergent field      the policy's winner is written to the other side (a side\n"
            "                       changed outside the log, seen with --remote, wins)\n"
            "  linked on one side   the partner's create is sent again with its marker (SOC\n"
            "                       external_id / ConnectWise externalXRef), looked up first:\n"
            "                       a partner that did land is linked, not created twice;\n"
            "                       one that did not is created. Commands that waited for\n"
            "                       the partner are sent again after it, in order\n"
            "  abandoned note       sent again, its marker looked up first (never doubled)\n"
            "  abandoned update     not re-sent as it was (it may be stale): acknowledged,\n"
            "                       and a field still divergent is repaired by its policy\n"
            "  parked command       sent again (a desk refused it for good: fix the cause\n"
            "                       first); the commands that waited behind it follow\n"
            "  stuck command        one the outbox no longer retries (no retry due within a\n"
            "                       minute) is closed and handled as above; one still being\n"
            "                       retried, or held by a tenant switch, is left alone\n"
            "  partner gone         (--remote) a linked ticket whose partner was deleted is\n"
            "                       unlinked with the reason, and never linked again, as when\n"
            "                       a ConnectWise ticket is deleted; nothing is re-created\n"
            "  marker, no link      (--remote) two tickets joined by socbridge's marker that\n"
            "                       the log has no link for (an older log restored) are\n"
            "                       linked again; a field they disagree on is then repaired\n"
            "Run it again after the outbox has delivered: a clean audit exits 0.\n\n"
            "exit codes: 0 nothing needs attention, 1 something does, 2 bad usage"
        ),
        epilog=(
            "examples:\n"
            "  socbridge audit --db events.db\n"
            "  socbridge audit --config socbridge.toml --remote --json\n"
            "  socbridge audit --config socbridge.toml --remote --fix"
        ),
    )
    add_db_arguments(p)
    p.add_argument("--remote", action="store_true", help="compare with both live APIs")
    p.add_argument(
        "--fix", action="store_true",
        help="append repair decisions (fields, one-sided links, stuck or abandoned commands, "
        "gone partners: see above)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--stuck-attempts", type=int, default=3, metavar="N",
        help="a pending command with N failed attempts is stuck (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--stuck-age", type=int, default=1000, metavar="EVENTS",
        help="a command pending while this many events were appended is stuck (default 1000)",
    )  # fmt: skip
    p.set_defaults(func=cmd_audit)


async def run_audit(
    path: Any, config: Config | None, args: argparse.Namespace, bars: Bars = NO_BARS
) -> dict[str, Any]:
    """Audit the log at ``path`` (and the live sides with ``--remote``); maybe fix."""
    anchors = config.store.anchors if config is not None else anchors_path(Path(path))
    store = await EventStore.open(path, readonly=not args.fix)
    try:
        checked = await verify(store, read_anchors(anchors), bars.task("verifying", None))
        events = await read_log(store, bars)
        limits = Limits(args.stuck_attempts, args.stuck_age)
        last = events[-1].position if events else 0
        report = audit(events, limits, bars.task("auditing", last))
        findings = list(report.findings)
        remote: Remote | None = None
        orphans: list[Orphan] = []
        rules = rules_from_config(config) if config is not None else None
        if args.remote:
            assert config is not None and rules is not None
            async with clients(config) as (cw, soc):
                remote = await fetch_remote(report.state, rules, cw, soc)
                orphans = await fetch_orphans(report.state, rules, cw, soc)
            findings.extend(compare_remote(report.state, remote))
            findings.extend(orphan_findings(orphans))
        repaired: list[dict[str, Any]] = []
        if args.fix:
            assert rules is not None
            fixes = plan_fixes(
                report, limits=limits, now=datetime.now(UTC), remote=remote, orphans=orphans
            )
            appended = await apply_fixes(store, report.state, fixes)
            # Field repairs are planned on the state with those fixes folded in.
            repairs = plan_repairs(report.state, rules.policy, remote)
            appended += await apply_repairs(store, report.state, rules, repairs)
            repaired = [{"position": e.position, "type": e.type, **e.data} for e in appended]
    finally:
        await store.close()
    attention = not checked.ok or any(f.severity == "attention" for f in findings)
    doc = {
        "verify": checked.to_dict(),
        "findings": [f.to_dict() for f in findings],
        "repairs": repaired,
        "needs_attention": attention,
    }
    if args.fix:
        doc["fixed"] = True
    return doc


def render(doc: dict[str, Any], out: IO[str]) -> None:
    v = doc["verify"]
    if v["ok"]:
        out.write(f"verify: intact, {v['checked']} events, chain verified\n")
    else:
        out.write(f"verify: BROKEN at position {v['first_bad_position']}: {v['problem']}\n")
    findings = doc["findings"]
    if findings:
        width = max(len(f["kind"]) for f in findings)
        for f in findings:
            mark = "!" if f["severity"] == "attention" else " "
            out.write(f"{mark} {f['kind']:<{width}}  {f['link_id'] or '-':<10}  {f['detail']}\n")
    attention = sum(f["severity"] == "attention" for f in findings)
    out.write(f"{len(findings)} findings, {attention} need attention\n")
    if doc.get("fixed"):
        _render_fix(doc["repairs"], out)


def _render_fix(repairs: list[dict[str, Any]], out: IO[str]) -> None:
    """What ``--fix`` appended: each decision, then what it set going, in words."""
    decided = [r for r in repairs if r["type"] == kinds.REPAIR_DECIDED]
    if not decided:
        out.write("--fix: nothing to repair; nothing was appended\n")
        return
    out.write(f"--fix appended {len(decided)} repairs ({len(repairs)} events):\n")
    for r in repairs:
        if r["type"] == kinds.REPAIR_DECIDED and "field" in r:
            out.write(f"  #{r['position']} {r['link_id']}: write {r['field']} {r['value']!r} "
                      f"to {r['target']} ({r['reason']})\n")  # fmt: skip
        elif r["type"] == kinds.REPAIR_DECIDED:
            out.write(f"  #{r['position']} {r['link_id']}: {r['repair']}: {r['reason']}\n")
        elif r["type"] == kinds.COMMAND_ISSUED:
            out.write(f"      #{r['position']} issued {r['kind']}\n")
        elif r["type"] == kinds.COMMAND_RETRIED:
            out.write(f"      #{r['position']} let {r['kind']} {r['command_id']} go again\n")
        elif r["type"] == kinds.COMMAND_ABANDONED:
            out.write(f"      #{r['position']} closed {r['kind']} {r['command_id']}\n")
        elif r["type"] in (kinds.UNLINKED, kinds.LINKED):
            out.write(f"      #{r['position']} {r['type']}\n")
    out.write("the running daemon's outbox delivers them; run socbridge audit again to confirm\n")


def cmd_audit(args: argparse.Namespace) -> int:
    if (args.remote or args.fix) and args.config is None:
        print("socbridge: error: --remote and --fix need --config (rules and API access)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.stuck_attempts < 1 or args.stuck_age < 1:
        print("socbridge: error: --stuck-attempts and --stuck-age must be at least 1",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE

    def action() -> int:
        config = load_config(args.config) if args.config else None
        try:
            with Bars(wanted(args.json)) as bars:
                doc = asyncio.run(run_audit(resolve_db(args), config, args, bars))
        except (ConnectWiseError, SocError) as exc:
            print(f"socbridge: error: --remote could not read a live side: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
        if args.json:
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        else:
            render(doc, sys.stdout)
        return EXIT_PROBLEM if doc["needs_attention"] else EXIT_OK

    return _guarded(action, "cannot read the event log")
