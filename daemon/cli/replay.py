"""``socbridge replay``: the state as of any point in the log; other conflict policies previewed.

Replay folds the log from position 1 and prints a summary of every
projection it rebuilt, with a progress bar on a terminal's stderr (none with
``--json`` or when stdout is not a terminal: see :mod:`daemon.cli.progress`). Plain
``socbridge replay`` also writes the rebuilt projection rows, so an operator
can repair corrupted or stale projection tables, safely while the daemon runs
(see :mod:`projections.replay`: the rows are written at the daemon's own
checkpoint, in one write transaction). ``--until`` (a position or a time) and
``--policy FIELD=POLICY`` are previews that write nothing: the state as it
was, and what another conflict policy would have decided, its different
decisions carried forward to later inputs. The output carries no clock:
replaying the same log twice prints the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any

import orjson

from daemon.cli.events import _when
from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from daemon.cli.progress import NO_BARS, Bars, read_log, wanted
from daemon.cli.store import _guarded, add_db_arguments, resolve_db
from daemon.service.config import load_config
from daemon.sync.decide import decide
from daemon.sync.rules import Rules, rules_from_config
from eventstore import EventStore, NewEvent, RecordedEvent
from projections.fold import apply
from projections.replay import (
    Moved,
    Preview,
    ReplaySummary,
    Written,
    copy_state,
    preview,
    replay,
    saved_checkpoint,
    snapshot,
    write_projection,
)
from projections.state import BridgeState

POLICIES = {"status": ("latest", "soc", "cw"), "priority": ("latest", "soc", "cw")}


def _policy(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if name not in POLICIES or value not in POLICIES[name]:
        raise argparse.ArgumentTypeError(
            f"--policy is FIELD=POLICY with FIELD status or priority and POLICY latest, soc "
            f"or cw, not {text!r}"
        )
    return name, value


def _until(text: str) -> int | str:
    if text.isdigit():
        return int(text)
    _when(text)  # refuses anything that is not an ISO time with a zone
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="rebuild the projections from the log; preview another conflict policy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Fold the event log from position 1 and summarise the state it gives (links,\n"
            "outbox, conflicts, a digest of the whole state), then write the rebuilt\n"
            "projection rows, repairing corrupted or stale projection tables. Safe while\n"
            "the daemon runs: the rows are written as of the daemon's own checkpoint, in\n"
            "one transaction, and the daemon folds the events after it as always.\n\n"
            "Previews write nothing: --until shows the state as it was; --policy shows, as a\n"
            "diff of decisions, what another conflict policy would have decided, carrying\n"
            "each different decision forward so later inputs see the state it leaves\n"
            "(marked 'downstream'); it needs --config for the rules. --dry-run folds and\n"
            "summarises without writing. The same log prints the same bytes.\n\n"
            "exit codes: 0 replayed, 1 the rows could not be written (the checkpoint kept\n"
            "moving), 2 bad option or configuration, 3 the log cannot be opened"
        ),
        epilog=(
            "examples:\n"
            "  socbridge replay --db events.db\n"
            "  socbridge replay --db events.db --until 1200\n"
            "  socbridge replay --config socbridge.toml --policy status=soc --policy priority=cw"
        ),
    )
    add_db_arguments(p)
    p.add_argument("--until", type=_until, help="last POSITION (or ISO time) to fold")
    p.add_argument(
        "--policy", type=_policy, action="append", default=[], metavar="FIELD=POLICY",
        help="preview this conflict policy (status/priority = latest, soc or cw)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--dry-run", action="store_true", help="fold and summarise only; write no projection row"
    )
    p.set_defaults(func=cmd_replay)


def until_position(events: list[RecordedEvent], until: int | str | None) -> int | None:
    if until is None or isinstance(until, int):
        return until
    moment = _when(until)
    return max((e.position for e in events if _when(e.recorded_at) <= moment), default=0)


def _written(written: Written | None) -> dict[str, Any] | None:
    if written is None:
        return None
    return {
        "checkpoint": written.position,
        "links": written.links,
        "outbox": written.outbox,
        "meta": written.meta,
    }


def render(
    summary: dict[str, Any],
    previewed: Preview | None,
    policy: dict[str, str],
    as_json: bool,
    written: Written | None = None,
) -> str:
    """The replay's output: deterministic, from the log (and the checkpoint written at)."""
    if as_json:
        doc: dict[str, Any] = {"summary": summary, "written": _written(written)}
        if previewed is not None:
            doc["preview"] = {
                "policy": policy,
                "inputs": previewed.inputs,
                "unchanged": previewed.same,
                "changed_by_policy": previewed.direct,
                "changed_downstream": previewed.downstream,
                "pending_after": previewed.pending,
                "undecided": previewed.undecided,
                "changed": [d.to_dict() for d in previewed.diffs],
            }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode() + "\n"
    lines = [f"replayed {summary['events']} events up to position {summary['position']}"]
    for key in ("links", "events_by_type"):
        for name, count in summary[key].items():
            lines.append(f"  {key.replace('_', ' ')}: {name:<30} {count}")
    for key in ("outbox_pending", "abandoned", "conflicts", "removed", "state_digest"):
        lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    if written is not None and written.position == 0:
        lines.append(
            "no projection checkpoint saved yet: projection rows cleared; the daemon folds "
            "the log from position 1 at its start"
        )
    elif written is not None:
        lines.append(
            f"wrote the projection rows as of the checkpoint, position {written.position}: "
            f"{written.links} links, {written.outbox} pending commands"
        )
        after = summary["position"] - written.position
        if after > 0:
            lines.append(f"  the {after} events after it are the daemon's to fold (as always)")
    else:
        lines.append("preview only: no projection row written")
    if previewed is not None:
        said = ", ".join(f"{k}={v}" for k, v in sorted(policy.items()))
        lines.append(
            f"policy preview ({said}): {len(previewed.diffs)} of {previewed.inputs} inputs "
            f"would have been decided differently ({previewed.direct} by the policy itself, "
            f"{previewed.downstream} downstream of those); {previewed.pending} commands "
            "left pending"
        )
        if previewed.undecided:
            lines.append(
                f"  {previewed.undecided} inputs at the end of the log have no decisions yet "
                "(sync has not decided them): left out"
            )
        for diff in previewed.diffs:
            why = "downstream" if diff.downstream else "policy"
            lines.append(f"@@ #{diff.cause_position} {diff.cause_type} {diff.ticket} ({why}) @@")
            for mark, decisions in (("-", diff.recorded), ("+", diff.proposed)):
                for d in decisions:
                    body = orjson.dumps(d["data"], option=orjson.OPT_SORT_KEYS).decode()
                    lines.append(f"{mark} {d['type']} {d['ticket']} {body}")
    return "\n".join(lines) + "\n"


#: Events read and folded at a time when replaying without a policy preview.
REPLAY_BATCH = 2000


#: How often a rebuild folds on to a checkpoint the daemon moved before giving up.
WRITE_ATTEMPTS = 10


class ReplayWriteError(Exception):
    """The rebuilt rows could not be written (the daemon kept saving its checkpoint)."""


async def _replay_streaming(
    store: EventStore, until: int | None, bars: Bars, snapshot_at: int | None = None
) -> ReplaySummary:
    """Fold the log batch by batch: memory stays that of the state, whatever the log's length."""
    last = await store.last_position()
    bar = bars.task("replaying", last if until is None else min(until, last))
    summary = ReplaySummary()
    async for batch in store.read_batches(1, batch_size=REPLAY_BATCH, until=until):
        replay(batch, until=until, on_progress=bar, into=summary, snapshot_at=snapshot_at)
    return summary


async def _fold_to(store: EventStore, state: BridgeState, position: int) -> BridgeState:
    """``state`` folded on (or, when it is past it, again from empty) up to ``position``."""
    if position < state.position:
        state = BridgeState()
    while state.position < position:
        batch = await store.read_batch(state.position + 1, REPLAY_BATCH)
        if not batch:
            break
        for event in batch:
            if event.position > position:
                return state
            apply(state, event)
    return state


async def rebuild_projection(
    reader: EventStore,
    writer: EventStore,
    err: IO[str],
    state: BridgeState | None = None,
    bars: Bars = NO_BARS,
) -> tuple[ReplaySummary, Written]:
    """Replay the whole log and write the projection rows as of the saved checkpoint.

    ``state`` (tests) stands for rows folded earlier, to a checkpoint since moved.
    """
    checkpoint = await reader.read_connection_call(saved_checkpoint)
    # At the end of the log (a daemon at rest, the usual case) the final state is the
    # rows: no copy, so memory stays that of one state.
    at_end = checkpoint > 0 and checkpoint == await reader.last_position()
    summary = await _replay_streaming(reader, None, bars, None if at_end else checkpoint)
    if state is not None:
        rows = state
    elif at_end and summary.position == checkpoint:
        rows = summary.state
    else:
        rows = snapshot(summary)
    for _ in range(WRITE_ATTEMPTS):

        def write(conn: Any, rows: BridgeState = rows) -> Written | Moved:
            return write_projection(conn, rows)

        outcome = await writer.run_exclusive(write)
        if isinstance(outcome, Written):
            if outcome.replaced:
                err.write(
                    f"replay: {outcome.replaced} projection rows were missing, stray or "
                    "differed from the rebuilt ones, and were replaced\n"
                )
            return summary, outcome
        # The daemon saved meanwhile: its rows now stand at a newer checkpoint.
        if rows is summary.state:
            rows = copy_state(rows)  # the summary printed is of the log as replayed
        rows = await _fold_to(reader, rows, outcome.position)
    raise ReplayWriteError(
        f"the projection checkpoint kept moving ({WRITE_ATTEMPTS} tries): nothing was "
        "written; run replay again"
    )


async def run_replay(
    store: EventStore,
    rules: Rules | None,
    args: argparse.Namespace,
    err: IO[str],
    bars: Bars = NO_BARS,
) -> str:
    if not args.policy and not isinstance(args.until, str):
        # No preview and no time to look up: nothing needs the whole log at once.
        summary = await _replay_streaming(store, args.until, bars)
        return render(summary.to_dict(), None, {}, args.json)
    events = await read_log(store, bars)
    until = until_position(events, args.until)
    last = events[-1].position if events else 0
    bar = bars.task("replaying", last if until is None else min(until, last))
    summary = replay(events, until=until, on_progress=bar)
    policy = dict(args.policy)
    previewed = None
    if policy:
        assert rules is not None
        other_rules = rules.with_policy(**policy)
        window = [e for e in events if until is None or e.position <= until]

        def decide_with(state: BridgeState, event: RecordedEvent) -> list[NewEvent]:
            return decide(state, event, other_rules)

        # At the log's end, inputs sync has not decided yet (the daemon is running) are
        # left out; before --until, every input was decided.
        decided = await store.read_connection_call(saved_checkpoint) if until is None else None
        previewed = preview(window, decide_with, decided)
    return render(summary.to_dict(), previewed, policy, args.json)


def writes(args: argparse.Namespace) -> bool:
    """Whether this replay writes the projection rows (no preview asked for)."""
    return not (args.policy or args.until is not None or getattr(args, "dry_run", False))


async def run_rebuild(
    path: Any, args: argparse.Namespace, err: IO[str], bars: Bars = NO_BARS
) -> str:
    """Replay the log at ``path`` and write its projection rows; the rendered summary."""
    reader = await EventStore.open(path, readonly=True)  # refuses a missing log
    try:
        writer = await EventStore.open(path)
        try:
            summary, written = await rebuild_projection(reader, writer, err, bars=bars)
        finally:
            await writer.close()
    finally:
        await reader.close()
    return render(summary.to_dict(), None, {}, args.json, written)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.policy and args.config is None:
        print(
            "socbridge: error: --policy needs --config (the rules to decide with)", file=sys.stderr
        )
        return EXIT_USAGE

    def action() -> int:
        rules = rules_from_config(load_config(args.config)) if args.config else None

        async def run(bars: Bars) -> str:
            if writes(args):
                return await run_rebuild(resolve_db(args), args, sys.stderr, bars)
            store = await EventStore.open(resolve_db(args), readonly=True)
            try:
                return await run_replay(store, rules, args, sys.stderr, bars)
            finally:
                await store.close()

        try:
            with Bars(wanted(args.json)) as bars:
                text = asyncio.run(run(bars))
            sys.stdout.write(text)
        except ReplayWriteError as exc:
            print(f"socbridge: error: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
        return EXIT_OK

    return _guarded(action, "cannot read the event log")
