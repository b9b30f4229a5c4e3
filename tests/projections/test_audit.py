"""The audit finds each kind of trouble, seeded into a real log decided by a live engine."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from eventstore import NewEvent
from projections import kinds
from projections.audit import (
    ATTENTION,
    AuditReport,
    Limits,
    audit,
    compare_remote,
    plan_fixes,
    plan_repairs,
)
from tests.support.history import Log, cw_seen, outcome, soc_seen


async def audited(log: Log, limits: Limits | None = None) -> AuditReport:
    report = audit(await log.events(), limits or Limits())
    await log.close()
    return report


def kinds_of(report: AuditReport) -> list[str]:
    return [f.kind for f in report.findings]


async def test_a_linked_pair_in_agreement_needs_no_attention(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
    await log.deliver("cw.update_ticket")
    report = await audited(log)
    assert report.findings == [] and not report.needs_attention


async def test_divergent_link_at_rest_is_found(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
    command = log.command("cw.update_ticket")
    await log.add(outcome(command, kinds.COMMAND_ABANDONED, reason="gave up", attempt=5))
    report = await audited(log)
    divergent = [f for f in report.findings if f.kind == "divergent"]
    assert [(f.link_id, f.data["field"], f.data["cw"], f.data["soc"]) for f in divergent] == [
        ("cw:1", "priority", "normal", "high")
    ]
    assert report.needs_attention
    repairs = plan_repairs(report.state, {"priority": "soc", "status": "latest"})
    assert [(r.link_id, r.field, r.target, r.value) for r in repairs] == [
        ("cw:1", "priority", "cw", "high")
    ]


async def test_policy_resolved_conflict_is_listed_without_needing_attention(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.conflict()
    await log.deliver("cw.update_ticket")
    await log.deliver("cw.update_ticket")
    report = await audited(log)
    assert kinds_of(report) == ["conflict-resolved"]
    assert report.findings[0].data["winner"] == "soc"
    assert not report.needs_attention


async def test_unresolved_conflict_is_found_when_the_winning_write_was_abandoned(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.conflict()
    for command in log.outbox:
        await log.add(outcome(command, kinds.COMMAND_ABANDONED, reason="refused", attempt=1))
    report = await audited(log)
    assert "conflict-unresolved" in kinds_of(report)
    assert "conflict-resolved" not in kinds_of(report)


async def test_own_write_taken_for_a_change_is_an_echo_misread(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    # Flagged as our own write, yet a value we never wrote: decided as a change.
    await log.add(cw_seen(1, "2026-11-29T10:01:00Z", priority="urgent", own_write=True))
    report = await audited(log)
    misread = [f for f in report.findings if f.kind == "echo-misread"]
    assert len(misread) == 1 and misread[0].data["field"] == "priority"


async def test_echo_recognised_without_an_expected_write_is_an_echo_misread(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
    await log.deliver("cw.update_ticket")
    await log.add(cw_seen(1, "2026-11-29T10:02:00Z", priority="high", own_write=True))
    await log.add(cw_seen(1, "2026-11-29T10:03:00Z", priority="low"))  # a person's change
    await log.deliver("soc.update_ticket")
    # "high" again, flagged as our own write and with no source time to tell it from a
    # late echo of our earlier write: taken for one, though none was expected.
    await log.add(cw_seen(1, None, priority="high", own_write=True))  # type: ignore[arg-type]
    report = await audited(log)
    assert any(
        f.kind == "echo-misread" and "none was expected" in f.detail for f in report.findings
    )


async def test_command_with_repeated_failures_is_stuck(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.add(cw_seen(1, "2026-11-29T10:00:00Z"))
    command = log.command("soc.create_ticket")
    for attempt in (1, 2, 3):
        await log.add(outcome(command, kinds.COMMAND_FAILED, attempt=attempt, error="HTTP 503"))
    report = await audited(log, Limits(stuck_attempts=3))
    stuck = [f for f in report.findings if f.kind == "command-stuck"]
    assert len(stuck) == 1 and stuck[0].data["attempts"] == 3
    assert "HTTP 503" in stuck[0].detail


async def test_old_pending_command_is_stuck(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.add(cw_seen(1, "2026-11-29T10:00:00Z"))
    await log.add(*(cw_seen(2, f"2026-11-29T10:0{n}:00Z", status="New") for n in range(3)))
    assert kinds_of(audit(await log.events(), Limits(stuck_age_events=10))) == []
    assert kinds_of(await audited(log, Limits(stuck_age_events=3))) == ["command-stuck"]


async def test_abandoned_command_is_found(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", status="solved"))
    command = log.command("cw.update_ticket")
    await log.add(outcome(command, kinds.COMMAND_ABANDONED, reason="refused: 400", attempt=1))
    report = await audited(log)
    abandoned = [f for f in report.findings if f.kind == "command-abandoned"]
    assert len(abandoned) == 1 and "refused: 400" in abandoned[0].detail
    assert abandoned[0].severity == ATTENTION


async def test_create_delivered_but_never_linked_is_linked_on_one_side(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.add(cw_seen(1, "2026-11-29T10:00:00Z"))
    await log.deliver("soc.create_ticket", {})  # delivered, but no ticket id came back
    report = await audited(log)
    one_sided = [f for f in report.findings if f.kind == "linked-one-side"]
    assert [f.link_id for f in one_sided] == ["cw:1"]
    assert "delivered" in one_sided[0].detail


async def test_remote_drift_is_found_and_the_drifted_side_wins_the_repair(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    report = await audited(log)
    live = {"cw:1": {"cw": {"status": "open", "priority": "normal"},
                     "soc": {"status": "open", "priority": "low"}}}  # fmt: skip
    drift = compare_remote(report.state, live)
    assert [(f.kind, f.data["side"], f.data["live"]) for f in drift] == [
        ("remote-drift", "soc", "low")
    ]
    repairs = plan_repairs(report.state, {"priority": "soc"}, live)
    assert [(r.target, r.value) for r in repairs] == [("cw", "low")]
    gone = compare_remote(report.state, {"cw:1": {"cw": None, "soc": live["cw:1"]["soc"]}})
    assert "remote-missing" in [f.kind for f in gone]


async def test_a_stuck_command_no_longer_retried_is_closed_and_sent_again(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", status="solved"))
    await log.add(cw_seen(1, "2026-11-29T10:02:00Z", priority="high"))  # -> soc.update_ticket
    await log.add(cw_seen(1, "2026-11-29T10:03:00Z", priority="high"))
    note = NewEvent("cw:ticket:1", kinds.CW_NOTE_OBSERVED,
                    {"id": 7, "ticket_id": 1, "text": "seen", "section": "Discussion"},
                    tenant="acme", ticket="cw:1", source="connectwise")  # fmt: skip
    await log.add(note)
    command = log.command("soc.add_comment")
    for attempt in (1, 2, 3):
        await log.add(outcome(command, kinds.COMMAND_FAILED, attempt=attempt, error="HTTP 503",
                              retry_in_s=30))  # fmt: skip
    report = await audited(log, Limits(stuck_attempts=3))
    failed_at = datetime.fromisoformat(report.failed[command.command_id][0])

    assert plan_fixes(report, now=failed_at + timedelta(seconds=10)) == []  # still retried
    assert plan_fixes(report) == []  # without a clock, a failure counts as retried
    fixes = plan_fixes(report, now=failed_at + timedelta(hours=1))
    assert [(f.action, f.close, f.command.kind if f.command else None) for f in fixes] == [
        ("reissue", True, "soc.add_comment")
    ]
    assert "no longer retried" in fixes[0].reason


async def test_an_abandoned_update_is_acknowledged_not_sent_again_blindly(
    tmp_path: Path,
) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
    command = log.command("cw.update_ticket")
    await log.add(outcome(command, kinds.COMMAND_ABANDONED, reason="refused: 400", attempt=1))
    report = await audited(log)
    fixes = plan_fixes(report)
    assert [(f.action, f.close) for f in fixes] == [("acknowledge", False)]
    # The field itself is repaired by its policy (the SOC wins priority).
    assert [(r.target, r.value) for r in plan_repairs(report.state, {"priority": "soc"})] == [
        ("cw", "high")
    ]
