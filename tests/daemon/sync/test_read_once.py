"""Same-second observations share reads: one read of a ticket at a time.

An ambiguous observation (another value within the second already known) is
answered by a read of the ticket that starts after it was recorded. While a read
is waiting or under way, later ones wait for it; those it started too early to
answer get exactly one more read, shared by all of them, once it is delivered.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from projections import kinds
from tests.support.history import Log, cw_seen, outcome

AT = "2026-11-29T10:05:00Z"


def fetched(log: Log, command_id: str, priority: str, read_after: int):  # type: ignore[no-untyped-def]
    """What the outbox records for a fresh read of cw:1 (see daemon/outbox/fetch.py)."""
    seen = cw_seen(1, AT, status="In Progress", priority=priority)
    data = {**seen.data, "via": "fetch", "read_after": read_after, "fresh": True,
            "fetch": command_id}  # fmt: skip
    return dataclasses.replace(seen, data=data, causation_id=command_id)


def reads(log: Log) -> list[str]:
    return [c.command_id for c in log.outbox if c.kind == "cw.fetch_ticket"]


async def test_observations_wait_for_the_read_and_share_one_more(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "events.db")
    try:
        await log.linked()
        await log.add(cw_seen(1, AT, status="In Progress", priority="low"))
        await log.add(cw_seen(1, AT, status="In Progress", priority="high"))
        [first] = reads(log)  # the second one was ambiguous: read the ticket again
        # The read is waiting: more of the same second wait for it, asking nothing.
        await log.add(cw_seen(1, AT, status="In Progress", priority="normal"))
        started = await log.store.last_position()  # the read starts here...
        await log.add(cw_seen(1, AT, status="In Progress", priority="urgent"))
        assert reads(log) == [first]
        # ...so it cannot answer the last: once delivered, one more read, for all such.
        command = next(c for c in log.outbox if c.command_id == first)
        await log.add(fetched(log, first, "normal", started))
        await log.add(outcome(command, kinds.COMMAND_DELIVERED, attempt=1, result={}))
        [second] = reads(log)
        assert second != first
        # A read started after all of them answers them: nothing more is asked.
        command = next(c for c in log.outbox if c.command_id == second)
        await log.add(fetched(log, second, "low", await log.store.last_position()))
        await log.add(outcome(command, kinds.COMMAND_DELIVERED, attempt=1, result={}))
        assert reads(log) == []
        assert log.live.engine is not None
        assert log.live.engine.state.links["cw:1"].awaiting_read == {}
        events = await log.events()
    finally:
        await log.close()
    ignored = [e.data for e in events if e.type == kinds.OBSERVATION_IGNORED
               and e.data["reason"] == "ambiguous"]  # fmt: skip
    assert [i["fetch"] for i in ignored] == [True, False, False]
    assert {i.get("waits_for") for i in ignored[1:]} == {first}
    asked = [e.data["params"] for e in events if e.type == kinds.COMMAND_ISSUED
             and e.data["kind"] == "cw.fetch_ticket"]  # fmt: skip
    assert [p.get("after_read") for p in asked] == [None, first]
