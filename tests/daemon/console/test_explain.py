"""The timeline's sentences, told from real logs: observations driven through the live engine.

Each log is built as the daemon builds it (observations appended as intake appends
them, the sync engine deciding on them, outcomes as the outbox records them); the
sentences are then read back the way the console's ticket timeline reads them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from daemon.console.explain import explain, rule_of, timeline
from eventstore import NewEvent, RecordedEvent
from projections import kinds
from tests.support.history import Log, cw_seen, outcome, soc_seen


def by_jane(event: NewEvent) -> NewEvent:
    """A ConnectWise observation whose last change was Jane Smith's."""
    return dataclasses.replace(event, data={**event.data, "updated_by": "Jane Smith"})


def sentence(events: list[RecordedEvent], type_: str, **match: Any) -> str:
    """The sentence of the last event of ``type_`` whose data holds ``match``."""
    found = [e for e in events if e.type == type_ and match.items() <= e.data.items()]
    assert found, f"no {type_} with {match} in the log"
    event = found[-1]
    cause = next((e for e in events if e.event_id == event.causation_id), None)
    return explain(event, cause)


async def log_of(tmp_path: Path, *steps: NewEvent) -> tuple[Log, list[RecordedEvent]]:
    log = await Log.open(tmp_path / "events.db")
    await log.linked()
    for step in steps:
        await log.add(step)
    return log, await log.events()


async def test_priority_changed_in_connectwise_is_copied_to_the_soc_naming_who_and_when(
    tmp_path: Path,
) -> None:
    log, events = await log_of(
        tmp_path, by_jane(cw_seen(1, "2026-11-29T10:02:11Z", priority="urgent"))
    )
    await log.close()
    text = sentence(events, kinds.FIELD_DECIDED, field="priority")
    assert text == (
        "Priority copied to the SOC: changed in ConnectWise by Jane Smith at 10:02:11 (now urgent)."
    )
    assert rule_of(next(e for e in events if e.type == kinds.FIELD_DECIDED)) == "R6"
    issued = sentence(events, kinds.COMMAND_ISSUED, kind="soc.update_ticket")
    assert issued == "Queued: set priority to urgent in the SOC."


async def test_priority_changed_in_the_soc_is_copied_to_connectwise_with_its_time(
    tmp_path: Path,
) -> None:
    log, events = await log_of(tmp_path, soc_seen(11, "2026-11-29T10:04:05Z", priority="high"))
    await log.close()
    text = sentence(events, kinds.FIELD_DECIDED, field="priority")
    # SOC observations do not say who changed the ticket: none is named.
    assert text == "Priority copied to ConnectWise: changed in the SOC at 10:04:05 (now high)."
    issued = sentence(events, kinds.COMMAND_ISSUED, kind="cw.update_ticket")
    assert issued == "Queued: set priority to Priority 2 - Quick Response in ConnectWise."


async def test_a_conflict_names_the_winner_and_the_policy(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "events.db")
    await log.conflict()  # SOC raises to urgent at 10:01, ConnectWise lowers to low at 10:02
    events = await log.events()
    await log.close()
    text = sentence(events, kinds.CONFLICT_RESOLVED)
    assert text == (
        "Priority conflict: changed to low in ConnectWise at 10:02:00 while the SOC had it "
        "urgent at 10:01:00; the SOC wins: the priority policy is that the SOC always wins, "
        "so urgent is written to ConnectWise."
    )
    entry = next(e for e in timeline(events) if e.type == kinds.CONFLICT_RESOLVED)
    assert entry.severity == "problem" and entry.desk == "socbridge"


async def test_our_own_write_coming_back_is_said_to_be_an_echo(tmp_path: Path) -> None:
    log, events = await log_of(
        tmp_path,
        cw_seen(1, "2026-11-29T10:02:00Z", priority="high"),
        soc_seen(11, "2026-11-29T10:02:03Z", priority="high"),  # our write landing
    )
    await log.close()
    text = sentence(events, kinds.ECHO_RECOGNISED, side="soc")
    assert text == (
        "The SOC shows priority high at 10:02:03, the value socbridge wrote there: "
        "our own write coming back (an echo), not copied again."
    )


async def test_same_second_values_are_read_again(tmp_path: Path) -> None:
    # Linked at 10:00:00 with priority normal; another value from that same second.
    log, events = await log_of(tmp_path, cw_seen(1, "2026-11-29T10:00:00Z", priority="high"))
    await log.close()
    text = sentence(events, kinds.OBSERVATION_IGNORED, reason="ambiguous")
    assert text == (
        "ConnectWise showed priority high at 10:00:00, the same second as the known normal: "
        "which came last cannot be told, so the ticket is read again to tell which is current."
    )
    read = sentence(events, kinds.COMMAND_ISSUED, kind="cw.fetch_ticket")
    assert read.startswith("Queued: read the ConnectWise ticket again")


async def test_routing_and_link_and_delivered_create(tmp_path: Path) -> None:
    log, events = await log_of(tmp_path)
    await log.close()
    assert sentence(events, kinds.LINK_REQUESTED) == (
        "ConnectWise ticket 1 was saved with the routing status on the integration board at "
        "10:00:00 (tenant acme): a SOC ticket is created for it."
    )
    assert sentence(events, kinds.COMMAND_DELIVERED) == (
        "Delivered (attempt 1): create the SOC ticket (priority normal); SOC ticket 11 created."
    )
    assert sentence(events, kinds.LINKED).startswith(
        "Linked ConnectWise ticket 1 with SOC ticket 11"
    )
    rules = {e.type: rule_of(e) for e in events}
    assert rules[kinds.LINK_REQUESTED] == rules[kinds.LINKED] == "R1"


async def test_failed_and_parked_commands_say_the_error_and_what_next(tmp_path: Path) -> None:
    log, _ = await log_of(tmp_path, cw_seen(1, "2026-11-29T10:02:00Z", priority="high"))
    command = log.command("soc.update_ticket")
    await log.add(
        outcome(command, kinds.COMMAND_FAILED, attempt=1, error="ClientConnectorError: refused",
                retry_in_s=30.0, remote_status="network"),
        outcome(command, kinds.COMMAND_PARKED, attempt=2, remote_status="422",
                reason="refused by the remote: 422 priority is not valid"),
    )  # fmt: skip
    events = await log.events()
    await log.close()
    failed = next(e for e in events if e.type == kinds.COMMAND_FAILED)
    retry = failed.recorded_at[11:19]
    text = sentence(events, kinds.COMMAND_FAILED)
    assert text.startswith(
        "Attempt 1 to set priority to high in the SOC failed: ClientConnectorError: refused; "
        "next try in 30 s, at "
    )
    assert text[-9:-1] != retry  # the next try, not the failure's own time
    assert sentence(events, kinds.COMMAND_PARKED) == (
        "Parked (attempt 2): set priority to high in the SOC was refused by the remote: "
        "422 priority is not valid (HTTP 422). It waits, with the ticket's later commands, "
        "until an operator retries or skips it."
    )
    entries = {e.type: e for e in timeline(events)}
    issued = next(e for e in events if e.event_id == command.command_id)
    assert entries[kinds.COMMAND_PARKED].cause_position == issued.position
    assert entries[kinds.COMMAND_PARKED].severity == "problem"
    assert entries[kinds.COMMAND_PARKED].desk == "SOC"


async def test_timeline_points_each_decision_at_its_observation(tmp_path: Path) -> None:
    log, events = await log_of(tmp_path, cw_seen(1, "2026-11-29T10:02:00Z", priority="high"))
    await log.close()
    entries = timeline(events)
    assert [e.position for e in entries] == [e.position for e in events]
    observed = [e for e in events if e.type == kinds.CW_TICKET_OBSERVED][-1]
    decided = next(e for e in entries if e.type == kinds.FIELD_DECIDED)
    assert decided.cause_position == observed.position
    assert decided.rule == "R6" and decided.severity == "change"
    assert entries[0].cause_position is None
    # A cause outside the events given has no arrow.
    assert (
        timeline([e for e in events if e.type != kinds.CW_TICKET_OBSERVED])[0].cause_position
        is None
    )


def recorded(type_: str, data: Any, **kw: Any) -> RecordedEvent:
    fields: dict[str, Any] = {
        "position": 1, "event_id": "e1", "stream": "s", "stream_version": 1, "type": type_,
        "schema_version": 1, "tenant": None, "ticket": None, "causation_id": None,
        "correlation_id": None, "source": "socbridge", "occurred_at": None,
        "recorded_at": "2026-11-29T10:00:00.000000Z", "data": data, "hash": "h",
    }  # fmt: skip
    return RecordedEvent(**{**fields, **kw})


EVERY_TYPE = sorted(
    v for k, v in vars(kinds).items()
    if k.isupper() and isinstance(v, str) and not k.endswith("SOURCE")
)  # fmt: skip

ODD = {
    "writes": "soc", "fields": 3, "at": 17, "side": None, "params": [1], "result": "x",
    "change": "y", "attempt": None, "retry_in_s": "soon", "successor": 5, "kind": 4,
    "note_key": None, "ok": "maybe", "public": "yes",
}  # fmt: skip


@pytest.mark.parametrize("type_", EVERY_TYPE)
@pytest.mark.parametrize("data", [{}, ODD], ids=["empty", "odd"])
def test_every_type_gets_a_sentence_whatever_its_data(type_: str, data: dict[str, Any]) -> None:
    event = recorded(type_, data)
    cause = recorded(kinds.COMMAND_ISSUED, data, event_id="c")
    for caused_by in (None, cause):
        text = explain(event, caused_by)
        assert text.strip() and text[0].isupper() and text.endswith(".")
    rule_of(event)
    [entry] = timeline([event])
    assert entry.sentence and entry.severity in ("info", "change", "problem")


def test_an_unknown_type_is_named_not_raised() -> None:
    text = explain(recorded("future.thing.happened", {"x": 1}, ticket="cw:5"), None)
    assert text == (
        "Recorded future.thing.happened for cw:5 (no plainer explanation is known for this event)."
    )
    assert rule_of(recorded("future.thing.happened", {})) is None


def test_admin_events_name_who_did_it() -> None:
    switched = recorded(
        kinds.TENANT_SYNC_DISABLED, {"tenant": "acme", "operator": "jane", "reason": "audit"}
    )
    assert explain(switched, None) == (
        "Sync of tenant acme switched off by jane (audit): "
        "its tickets are neither read nor written."
    )
    assert rule_of(switched) == "R9"
    retried = recorded(kinds.COMMAND_RETRIED, {"kind": "cw.add_note", "operator": "local"})
    assert "by local" in explain(retried, None)


def cw_note(ident: int, section: str, at: str) -> NewEvent:
    data = {"id": ident, "ticket_id": 1, "text": "Isolated the host", "section": section,
            "author": "jsmith", "created_at": at, "updated_at": at, "own_write": False}  # fmt: skip
    return NewEvent("cw:ticket:1", kinds.CW_NOTE_OBSERVED, data, tenant="acme", ticket="cw:1",
                    source="connectwise", occurred_at=at)  # fmt: skip


async def test_notes_mirrored_or_skipped_by_their_type(tmp_path: Path) -> None:
    log, events = await log_of(
        tmp_path,
        cw_note(55, "Discussion", "2026-11-29T10:05:00Z"),
        cw_note(56, "Internal Analysis", "2026-11-29T10:06:00Z"),
    )
    await log.close()
    assert sentence(events, kinds.CW_NOTE_OBSERVED, id=55) == (
        "ConnectWise note 55 (Discussion) on ConnectWise ticket 1 by jsmith at 10:05:00: "
        '"Isolated the host".'
    )
    assert sentence(events, kinds.NOTE_MIRROR_DECIDED) == (
        "ConnectWise note 55 by jsmith mirrored to the SOC as a comment."
    )
    assert sentence(events, kinds.NOTE_SKIPPED) == (
        "ConnectWise note 56 not mirrored: note type Internal Analysis is not sent to the SOC."
    )
    assert {rule_of(e) for e in events if e.type.startswith("sync.note.")} == {"R8"}
