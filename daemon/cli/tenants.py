"""``socbridge tenants list|enable|disable``: each tenant's sync switch (R9), as events.

A tenant's effective switch is its ``sync_enabled`` in the configuration,
overridden by the latest ``admin.tenant.sync_enabled`` / ``sync_disabled``
event (until a later applied config changes that tenant's ``sync_enabled``:
the latest word wins, see :mod:`daemon.service.applied`). ``enable`` and ``disable``
append that event (with the operator and an optional reason) to the event
log; a running daemon folds it within about a second and stops, or resumes,
reading and writing the tenant. Safe while the daemon runs (a second writer
waits for SQLite's lock). ``list`` opens the log read-only.

The tenants are those of the configuration file; the configured value shown
is the one of the configuration last applied by the daemon when there is
one (what runs), else the file's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from daemon.cli.store import _guarded
from daemon.operations.tenant_switch import append_switch
from daemon.service.applied import last_applied, operator_name
from daemon.service.config import Config, config_hash, load_config
from eventstore import ConcurrencyError, EventStore, RecordedEvent
from projections import kinds
from projections.fold import fold
from projections.state import BridgeState

SOURCE = "socbridge.cli"

_EXIT_CODES = (
    "exit codes: 0 done (or already in that state), 1 the switch changed meanwhile (run\n"
    "again), 2 usage or configuration error, unknown tenant, 3 event log unusable"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "tenants",
        help="list tenants and switch a tenant's sync on or off",
        formatter_class=fmt,
        description=(
            "Show each configured tenant's sync switch, or switch it (R9). A switch is an\n"
            "event in the log; a running daemon follows it within about a second: a tenant\n"
            "switched off is neither read nor written, and switched back on, its linked\n"
            "tickets are re-read on both sides.\n\n" + _EXIT_CODES
        ),
        epilog=(
            "examples:\n"
            "  socbridge tenants list --config /etc/socbridge/socbridge.toml\n"
            "  socbridge tenants disable acme --config socbridge.toml --reason 'contract paused'\n"
            "  socbridge tenants enable acme --config socbridge.toml"
        ),
    )
    tsub = p.add_subparsers(dest="tenants_command", metavar="ACTION", required=True)

    lst = tsub.add_parser(
        "list",
        help="show every configured tenant, its effective sync switch and its links",
        formatter_class=fmt,
        description=(
            "One line per configured tenant: effective sync (on/off), where that comes from\n"
            "(config, or the switch event that set it), and its link counts. Opens the log\n"
            "read-only; safe while the daemon runs.\n\n"
            "exit codes: 0 listed, 2 configuration error, 3 event log unusable"
        ),
        epilog=(
            "examples:\n"
            "  socbridge tenants list --config socbridge.toml\n"
            "  socbridge tenants list --config socbridge.toml --json | jq '.tenants[].sync'"
        ),
    )
    _common(lst)
    lst.add_argument("--json", action="store_true", help="print the list as one JSON object")
    lst.set_defaults(func=cmd_list)

    for action, verb in (("enable", "on"), ("disable", "off")):
        q = tsub.add_parser(
            action,
            help=f"switch a tenant's sync {verb} (appends an admin.tenant event)",
            formatter_class=fmt,
            description=(
                f"Switch the tenant's sync {verb}: append admin.tenant.sync_{action}d with the\n"
                "operator and reason. Nothing is appended when the tenant is unknown (exit 2)\n"
                "or already in that state (exit 0).\n\n" + _EXIT_CODES
            ),
            epilog=(
                "examples:\n"
                f"  socbridge tenants {action} acme --config /etc/socbridge/socbridge.toml\n"
                f"  socbridge tenants {action} acme --config socbridge.toml --reason 'ticket 4711'"
            ),
        )
        q.add_argument("tenant", metavar="NAME", help="the tenant's name ([[tenants]] name)")
        _common(q)
        q.add_argument("--reason", default=None, help="why (recorded in the event)")
        q.add_argument(
            "--operator",
            default=None,
            help="who (recorded in the event; default: the login name, e.g. $USER)",
        )
        q.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
        q.set_defaults(func=cmd_switch, enable=action == "enable")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="socbridge configuration"
    )
    p.add_argument(
        "--db", type=Path, metavar="PATH", help="the event log (default: the config's [store])"
    )


@dataclass
class TenantView:
    """What ``tenants list`` shows of one tenant."""

    name: str
    soc_organization_id: int
    cw_company_id: int
    configured: bool
    sync: bool
    set_by: str  # "config" or "switch"
    switched: dict[str, Any] | None
    links: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.name,
            "sync": self.sync,
            "set_by": self.set_by,
            "configured_sync_enabled": self.configured,
            "soc_organization_id": self.soc_organization_id,
            "cw_company_id": self.cw_company_id,
            "switch": self.switched,
            "links": self.links,
        }


@dataclass
class Log:
    """What the log says about tenants: the folded state, switches and the applied config."""

    state: BridgeState
    switches: dict[str, RecordedEvent]
    applied: RecordedEvent | None


async def read_log(path: Path) -> Log:
    """Fold the log read-only (an absent log is an empty one: the daemon never ran)."""
    if not path.exists():
        return Log(BridgeState(), {}, None)
    store = await EventStore.open(path, readonly=True)
    try:
        events = [e async for e in store.read()]
        applied = await last_applied(store)
    finally:
        await store.close()
    switches = {
        e.data["tenant"]: e
        for e in events
        if e.type in (kinds.TENANT_SYNC_ENABLED, kinds.TENANT_SYNC_DISABLED)
    }
    return Log(fold(events), switches, applied)


def views(config: Config, log: Log) -> list[TenantView]:
    last = log.applied.data.get("tenants", []) if log.applied is not None else []
    applied = {t["name"]: t["sync_enabled"] for t in last}
    counts: dict[str, Counter[str]] = {}
    for link in log.state.links.values():
        counts.setdefault(link.tenant, Counter())[link.state] += 1
    out = []
    for t in config.tenants:
        configured = applied.get(t.name, t.sync_enabled)
        switch = log.state.tenant_switches.get(t.name)
        event = log.switches.get(t.name) if switch is not None else None
        by_tenant = counts.get(t.name, Counter())
        out.append(
            TenantView(
                name=t.name,
                soc_organization_id=t.soc_organization_id,
                cw_company_id=t.cw_company_id,
                configured=configured,
                sync=configured if switch is None else switch,
                set_by="config" if switch is None else "switch",
                switched=_switch_doc(event) if event is not None else None,
                links={s: by_tenant[s] for s in ("linked", "requested", "unlinked")},
            )
        )
    return out


def _switch_doc(event: RecordedEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "recorded_at": event.recorded_at,
        "type": event.type,
        "operator": event.data.get("operator"),
        "reason": event.data.get("reason"),
    }


def _line(v: TenantView) -> str:
    how = "config"
    if v.switched is not None:
        who = v.switched["operator"] or "?"
        how = f"switch #{v.switched['position']} by {who} at {v.switched['recorded_at'][:19]}"
        if v.switched["reason"]:
            how += f" ({v.switched['reason']})"
    n = v.links
    links = f"{n['linked']} linked, {n['requested']} pending, {n['unlinked']} unlinked"
    return (
        f"{v.name:<16} {'on' if v.sync else 'off':<4} {v.soc_organization_id:>9} "
        f"{v.cw_company_id:>9}  {links:<34}  {how}"
    )


def cmd_list(args: argparse.Namespace) -> int:
    def action() -> int:
        config = load_config(args.config)
        log = asyncio.run(read_log(args.db or config.store.path))
        shown = views(config, log)
        file_hash = config_hash(config)
        applied_hash = log.applied.data.get("hash") if log.applied is not None else None
        if args.json:
            doc = {
                "config": str(args.config),
                "config_hash": file_hash,
                "applied_hash": applied_hash,
                "tenants": [view.to_json() for view in shown],
            }
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
            return EXIT_OK
        print(f"{'TENANT':<16} {'SYNC':<4} {'SOC ORG':>9} {'CW CO':>9}  {'LINKS':<34}  SET BY")
        for view in shown:
            print(_line(view))
        if applied_hash is not None and applied_hash != file_hash:
            print(
                f"note: {args.config} differs from the configuration the daemon last applied; "
                "reload it (systemctl reload socbridge) to apply the file"
            )
        return EXIT_OK

    return _guarded(action, "cannot read the event log")


async def switch(
    path: Path, config: Config, tenant: str, enable: bool, operator: str, reason: str | None
) -> tuple[bool, TenantView]:
    """Append the switch event unless the tenant is already in that state.

    Returns whether an event was appended, and the tenant as it was before.
    """
    before = next(v for v in views(config, await read_log(path)) if v.name == tenant)
    if before.sync == enable:
        return False, before
    store = await EventStore.open(path, synchronous=config.store.synchronous)
    try:
        await append_switch(
            store, tenant, enable, operator=operator, reason=reason, was=before.sync,
            was_set_by=before.set_by, source=SOURCE,
        )  # fmt: skip
    finally:
        await store.close()
    return True, before


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    if args.json:
        sys.stdout.write(orjson.dumps({"ok": False, "error": message}).decode() + "\n")
    print(f"socbridge: error: {message}", file=sys.stderr)
    return code


def cmd_switch(args: argparse.Namespace) -> int:
    verb = "enabled" if args.enable else "disabled"

    def action() -> int:
        config = load_config(args.config)
        names = [t.name for t in config.tenants]
        if args.tenant not in names:
            return _fail(
                args,
                EXIT_USAGE,
                f"unknown tenant {args.tenant!r} in {args.config}; "
                f"configured tenants: {', '.join(names)} (nothing was changed)",
            )
        path = args.db or config.store.path
        try:
            done, before = asyncio.run(
                switch(
                    path,
                    config,
                    args.tenant,
                    args.enable,
                    operator_name(args.operator),
                    args.reason,
                )
            )
        except ConcurrencyError:
            return _fail(
                args,
                EXIT_PROBLEM,
                f"tenant {args.tenant}'s switch changed meanwhile; "
                "nothing was appended, run the command again",
            )
        if args.json:
            doc = {"ok": True, "tenant": args.tenant, "sync": args.enable, "appended": done,
                   "was": before.sync, "was_set_by": before.set_by}  # fmt: skip
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
            return EXIT_OK
        if not done:
            print(f"tenant {args.tenant}: sync is already {verb} (set by {before.set_by}); "
                  "nothing appended")  # fmt: skip
            return EXIT_OK
        print(
            f"tenant {args.tenant}: sync {verb} (was {'on' if before.sync else 'off'}, "
            f"set by {before.set_by}); a running daemon follows within about a second"
        )
        return EXIT_OK

    return _guarded(action, "cannot use the event log")
