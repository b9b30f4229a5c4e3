"""``socbridge replay``: the state as of any point in the log; other conflict policies previewed.

Replay folds the log from position 1 (up to ``--until``, a position or a
time) and prints a summary of every projection it rebuilt, with a progress
bar on a terminal's stderr. ``--policy FIELD=POLICY`` re-runs sync's pure
``decide`` over the log's inputs with that conflict policy and prints where
its decisions differ from the recorded ones. Nothing is ever written, and the
output carries no clock: replaying the same log twice prints the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any

import orjson

from daemon.cli import EXIT_OK, EXIT_USAGE
from daemon.config import load_config
from daemon.events_cli import _when
from daemon.store_cli import _guarded, add_db_arguments, resolve_db
from daemon.sync.decide import decide
from daemon.sync.rules import Rules, rules_from_config
from eventstore import EventStore, NewEvent, RecordedEvent
from projections.replay import Preview, ReplaySummary, preview, replay
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
            "outbox, conflicts, a digest of the whole state). --until shows the state as it\n"
            "was. --policy previews, as a diff of decisions, what another conflict policy\n"
            "would have decided at each input (judged on the recorded history; needs\n"
            "--config for the rules). Writes nothing; the same log prints the same bytes.\n\n"
            "exit codes: 0 replayed, 2 bad option or configuration, 3 the log cannot be opened"
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
    p.set_defaults(func=cmd_replay)


class Progress:
    """A one-line progress bar on a terminal; nothing when not a terminal."""

    def __init__(self, out: IO[str], total: int) -> None:
        self.out, self.total = out, max(total, 1)
        self.enabled = out.isatty()
        self.shown = -1

    def __call__(self, position: int) -> None:
        percent = min(100, position * 100 // self.total)
        if self.enabled and percent != self.shown:
            self.shown = percent
            bar = "#" * (percent // 4)
            self.out.write(f"\rreplaying [{bar:<25}] {percent:3d}% ({position}/{self.total})")
            self.out.flush()

    def done(self) -> None:
        if self.enabled:
            self.out.write("\n")


def until_position(events: list[RecordedEvent], until: int | str | None) -> int | None:
    if until is None or isinstance(until, int):
        return until
    moment = _when(until)
    return max((e.position for e in events if _when(e.recorded_at) <= moment), default=0)


def render(
    summary: dict[str, Any], previewed: Preview | None, policy: dict[str, str], as_json: bool
) -> str:
    """The replay's output: deterministic, from the log alone."""
    if as_json:
        doc: dict[str, Any] = {"summary": summary}
        if previewed is not None:
            doc["preview"] = {
                "policy": policy,
                "inputs": previewed.inputs,
                "unchanged": previewed.same,
                "changed": [d.to_dict() for d in previewed.diffs],
            }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode() + "\n"
    lines = [f"replayed {summary['events']} events up to position {summary['position']}"]
    for key in ("links", "events_by_type"):
        for name, count in summary[key].items():
            lines.append(f"  {key.replace('_', ' ')}: {name:<30} {count}")
    for key in ("outbox_pending", "abandoned", "conflicts", "removed", "state_digest"):
        lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    if previewed is not None:
        said = ", ".join(f"{k}={v}" for k, v in sorted(policy.items()))
        lines.append(
            f"policy preview ({said}): {len(previewed.diffs)} of {previewed.inputs} inputs "
            "would have been decided differently"
        )
        for diff in previewed.diffs:
            lines.append(f"@@ #{diff.cause_position} {diff.cause_type} {diff.ticket} @@")
            for mark, decisions in (("-", diff.recorded), ("+", diff.proposed)):
                for d in decisions:
                    body = orjson.dumps(d["data"], option=orjson.OPT_SORT_KEYS).decode()
                    lines.append(f"{mark} {d['type']} {d['ticket']} {body}")
    return "\n".join(lines) + "\n"


#: Events read and folded at a time when replaying without a policy preview.
REPLAY_BATCH = 2000


async def _replay_streaming(store: EventStore, until: int | None, err: IO[str]) -> ReplaySummary:
    """Fold the log batch by batch: memory stays that of the state, whatever the log's length."""
    last = await store.last_position()
    bar = Progress(err, until if until is not None else last)
    summary = ReplaySummary()
    position = 1
    while until is None or position <= until:
        batch = await store.read_batch(position, REPLAY_BATCH)
        if not batch:
            break
        replay(batch, until=until, progress=bar, into=summary)
        position = batch[-1].position + 1
    bar.done()
    return summary


async def run_replay(
    store: EventStore, rules: Rules | None, args: argparse.Namespace, err: IO[str]
) -> str:
    if not args.policy and not isinstance(args.until, str):
        # No preview and no time to look up: nothing needs the whole log at once.
        summary = await _replay_streaming(store, args.until, err)
        return render(summary.to_dict(), None, {}, args.json)
    events = [e async for e in store.read()]
    until = until_position(events, args.until)
    bar = Progress(err, until if until is not None else (events[-1].position if events else 0))
    summary = replay(events, until=until, progress=bar)
    bar.done()
    policy = dict(args.policy)
    previewed = None
    if policy:
        assert rules is not None
        other_rules = rules.with_policy(**policy)
        window = [e for e in events if until is None or e.position <= until]

        def decide_with(state: BridgeState, event: RecordedEvent) -> list[NewEvent]:
            return decide(state, event, other_rules)

        previewed = preview(window, decide_with)
    return render(summary.to_dict(), previewed, policy, args.json)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.policy and args.config is None:
        print(
            "socbridge: error: --policy needs --config (the rules to decide with)", file=sys.stderr
        )
        return EXIT_USAGE

    def action() -> int:
        rules = rules_from_config(load_config(args.config)) if args.config else None

        async def run() -> str:
            store = await EventStore.open(resolve_db(args), readonly=True)
            try:
                return await run_replay(store, rules, args, sys.stderr)
            finally:
                await store.close()

        sys.stdout.write(asyncio.run(run()))
        return EXIT_OK

    return _guarded(action, "cannot read the event log")
