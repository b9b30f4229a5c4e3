"""Replay: same log, same decisions; another policy changes only what it touches; same bytes."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings

from projections import kinds
from projections.replay import preview, replay, saved_checkpoint, state_digest
from projections.state import BridgeState
from tests.support.history import Log, carried_history, deciding, edited, edits, soc_seen
from tests.support.legacy.compare import same_as_legacy
from tests.support.rules import RULES


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_concurrent_edits_on_both_sides_replay_to_the_same_decisions(
    ops: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        events = asyncio.run(edited(Path(tmp) / "e.db", ops))
    result = preview(events, deciding())
    assert result.diffs == []
    same_as_legacy(events, RULES)
    assert (
        result.same
        == result.inputs
        == sum(e.type in kinds.OBSERVATIONS | {kinds.COMMAND_DELIVERED} for e in events)
    )


async def test_concurrent_edits_on_both_sides_replay_to_the_recorded_conflict(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.conflict()
    events = await log.events()
    await log.close()
    assert [e.type for e in events].count(kinds.CONFLICT_RESOLVED) == 1
    assert preview(events, deciding()).diffs == []


async def test_policy_preview_changes_only_the_decisions_that_policy_touches(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.conflict()
    events = await log.events()
    await log.close()
    cause = next(e for e in events if e.type == kinds.CONFLICT_RESOLVED).causation_id

    untouched = preview(events, deciding(status="cw"))  # no status conflict in this history
    assert untouched.diffs == []

    changed = preview(events, deciding(priority="cw"))
    assert len(changed.diffs) == 1
    diff = changed.diffs[0]
    assert next(e for e in events if e.position == diff.cause_position).event_id == cause
    recorded = next(d for d in diff.recorded if d["type"] == kinds.CONFLICT_RESOLVED)
    proposed = next(d for d in diff.proposed if d["type"] == kinds.CONFLICT_RESOLVED)
    assert (recorded["data"]["winner"], proposed["data"]["winner"]) == ("soc", "cw")
    assert proposed["data"]["writes"]["soc"] == "low"
    assert changed.same == changed.inputs - 1


async def test_replay_until_a_position_shows_the_state_as_it_was(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    events = await log.events()
    await log.close()
    linked_at = next(e.position for e in events if e.type == kinds.LINKED)
    before = replay(events, until=linked_at - 1)
    after = replay(events)
    assert before.state.links["cw:1"].state == "requested"
    assert after.state.links["cw:1"].state == "linked"
    assert before.position == linked_at - 1 and after.position == events[-1].position
    assert state_digest(replay(events).state) == state_digest(after.state)
    assert state_digest(before.state) != state_digest(after.state)
    assert state_digest(BridgeState()) != state_digest(after.state)


async def test_a_changed_conflict_outcome_is_carried_forward_to_later_decisions(
    tmp_path: Path,
) -> None:
    events = await carried_history(tmp_path / "e.db")
    by_position = {e.position: e for e in events}
    conflict = next(e for e in events if e.type == kinds.CONFLICT_RESOLVED)
    later = next(e for e in events if e.type == kinds.SOC_TICKET_OBSERVED and
                 e.data["priority"] == "high")  # fmt: skip

    changed = preview(events, deciding(priority="cw"))
    assert [(by_position[d.cause_position].event_id, d.downstream) for d in changed.diffs] == [
        (conflict.causation_id, False),  # the policy itself: ConnectWise wins now
        (later.event_id, True),  # because of it: the later write expects another value
    ]
    first, second = changed.diffs
    proposed = next(d for d in first.proposed if d["type"] == kinds.CONFLICT_RESOLVED)
    assert proposed["data"]["winner"] == "cw" and proposed["data"]["writes"]["soc"] == "low"
    # Judged on the recorded state alone, the later input is decided as recorded;
    # carried forward, its command expects ConnectWise to hold "low", not "urgent".
    recorded_cmd = next(d for d in second.recorded if d["type"] == kinds.COMMAND_ISSUED)
    proposed_cmd = next(d for d in second.proposed if d["type"] == kinds.COMMAND_ISSUED)
    assert "low" not in recorded_cmd["data"]["params"]["accept"]["priority"]
    assert "low" in proposed_cmd["data"]["params"]["accept"]["priority"]
    assert (changed.direct, changed.downstream) == (1, 1)
    assert changed.same == changed.inputs - 2

    untouched = preview(events, deciding(status="cw"))  # no status conflict anywhere
    assert untouched.diffs == [] and untouched.same == untouched.inputs
    assert preview(events, deciding()).diffs == []
    # Pure: the same log previews to the same result.
    again = preview(events, deciding(priority="cw"))
    assert [d.to_dict() for d in again.diffs] == [d.to_dict() for d in changed.diffs]


async def test_a_preview_of_a_live_log_leaves_out_inputs_not_decided_yet(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    try:
        await log.conflict()
        await log.live.settle()
        await log.live.stop()  # saves its checkpoint, at the end of the log
        checkpoint = await log.store.read_connection_call(saved_checkpoint)
        # A change recorded as the preview runs, before sync has decided it.
        await log.store.append([soc_seen(11, "2026-11-29T10:05:00Z", priority="high")])
        events = await log.events()
    finally:
        await log.store.close()
    assert checkpoint == events[-2].position
    live = preview(events, deciding(priority="cw"), decided_through=checkpoint)
    assert live.undecided == 1
    assert [d.cause_position for d in live.diffs] == [
        d.cause_position for d in preview(events[:-1], deciding(priority="cw")).diffs
    ]
    # Taken for a log at rest, the undecided change would read as changed by the policy.
    at_rest = preview(events, deciding(priority="cw"))
    assert events[-1].position in [d.cause_position for d in at_rest.diffs]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_the_digest_fed_record_by_record_is_the_hash_of_the_whole_state(
    ops: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        events = asyncio.run(edited(Path(tmp) / "e.db", ops))
    state = replay(events).state
    whole = orjson.dumps(state.to_json(), option=orjson.OPT_SORT_KEYS)
    assert state_digest(state) == hashlib.sha256(whole).hexdigest()[:16]
