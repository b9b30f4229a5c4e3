"""Fetches of several tickets of one desk, ready at once, cost one read of that desk.

Under a burst, sync asks for a re-read of many tickets (same-second observations it
cannot order). Each such fetch is a command of its own link's lane; when several are
at the heads of their lanes together, the outbox reads their tickets with one
``conditions=id in (...)`` request, then records each ticket's observation and each
command's outcome exactly as a fetch of one ticket does; the reads that were not
fresh are tried again together. A ticket missing from the answer is read alone, so
its 404 parks its fetch as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.connectors.connectwise import observe
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.contract import Record
from daemon.outbox.worker import Outbox
from daemon.simulators.connectwise import SimServer, fixture
from eventstore import EventStore, RecordedEvent, derived_event_id
from projections import kinds
from projections.state import PendingCommand
from tests.support.history import Log
from tests.support.rules import CW_PRIORITIES

TICKETS = 5


async def _ambiguous(log: Log, tech: ConnectWiseClient, desk: ConnectWiseDesk) -> list[int]:
    """Linked tickets, each then seen with another priority from the same second: sync
    cannot tell which is current and asks for a fetch of each."""
    ids = []
    for n in range(TICKETS):
        ticket = await tech.create_ticket({
            "summary": f"Beaconing host {n}", "company": {"id": 250},
            "board": {"id": fixture.BOARD_ID}, "status": {"id": fixture.STATUS_IDS["Send to SOC"]},
            "priority": {"name": CW_PRIORITIES["normal"]},
        })  # fmt: skip
        ids.append(int(ticket["id"]))
        data = observe.ticket_data(ticket, via="callback", api_member=fixture.API_MEMBER)
        await log.add(_seen(desk, data, "routed"))
        create = next(c for c in log.outbox if c.link_id == f"cw:{ticket['id']}")
        await log.deliver_command(create, {"id": 100 + n})
        await log.add(_seen(desk, {**data, "priority": CW_PRIORITIES["high"]}, "same second"))
    return ids


def _seen(desk: ConnectWiseDesk, data: Mapping[str, Any], what: str) -> Any:
    event_id = derived_event_id("test", str(data["id"]), what)
    return desk.ticket_event(
        tenant="acme", data=data, event_id=event_id, occurred_at=data["updated_at"]
    )


class Changing(ConnectWiseDesk):
    """ConnectWise whose tickets each change once while the outbox reads them: the change's
    callback is recorded between the first read and the fetch's record of it."""

    store: EventStore | None = None

    async def read_tickets(self, ticket_ids: Collection[int]) -> dict[int, Record]:
        tickets = await super().read_tickets(ticket_ids)
        if self.store is not None:
            for ticket in tickets.values():
                data = observe.ticket_data(ticket, via="callback", api_member=fixture.API_MEMBER)
                await self.store.append([_seen(self, data, "meanwhile")])
            self.store = None
        return tickets


@dataclass
class Fetched:
    """What carrying out the fetches showed: the tickets, their fetch commands, the log,
    and the outbox's ConnectWise requests (method, purpose) while it ran."""

    ids: list[int]
    fetches: list[PendingCommand]
    events: dict[str, RecordedEvent]
    sent: list[tuple[str, str]]


async def _fetched(
    cw: ConnectWiseClient, tech: ConnectWiseClient, path: Path, *, deleted: int | None = None,
    changing: bool = False,
) -> Fetched:  # fmt: skip
    """Run the outbox over the fetches of :func:`_ambiguous` until each has its outcome,
    delivered or parked; ticket ``deleted`` (an index) is deleted before they are read;
    ``changing``: the tickets change while first read (see :class:`Changing`)."""
    sent: list[tuple[str, str]] = []
    desk = Changing(cw) if changing else ConnectWiseDesk(cw)
    log = await Log.open(path)
    try:
        ids = await _ambiguous(log, tech, desk)
        fetches = [c for c in log.outbox if c.kind == "cw.fetch_ticket"]
        assert len(fetches) == TICKETS and len({c.lane for c in fetches}) == TICKETS
        if deleted is not None:
            await tech.delete(f"service/tickets/{ids[deleted]}")
        if isinstance(desk, Changing):
            desk.store = log.store
        engine = log.live.engine
        assert engine is not None
        waiting = {c.command_id for c in fetches}
        ended = asyncio.Event()

        def folded(event: RecordedEvent) -> None:
            if event.type in (kinds.COMMAND_DELIVERED, kinds.COMMAND_PARKED):
                waiting.discard(event.data["command_id"])
                if not waiting:
                    ended.set()

        engine.on_event(folded)
        cw.remote.on_request = lambda _remote, method, purpose: sent.append((method, purpose))
        task = asyncio.create_task(Outbox(log.store, engine, {"cw": desk}).run())
        try:
            await asyncio.wait_for(ended.wait(), 30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        events = {e.event_id: e for e in await log.events()}
    finally:
        await log.close()
    return Fetched(ids, fetches, events, sent)


async def test_ready_fetches_of_one_desk_cost_one_read_and_each_gets_its_outcome(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, tmp_path: Path
) -> None:
    run = await _fetched(cw, tech, tmp_path / "events.db")
    assert run.sent == [("GET", "fetch")]  # one read for all five tickets
    read_after = set()
    for command, ticket_id in zip(run.fetches, run.ids, strict=True):
        # Its own outcome, under the id a fetch of one ticket records it with.
        outcome_id = derived_event_id("outbox", command.command_id, kinds.COMMAND_DELIVERED, "")
        outcome = run.events[outcome_id]
        assert outcome.causation_id == command.command_id
        result = outcome.data["result"]
        assert result["fresh"] is True and outcome.data["attempt"] == 1
        # Its ticket's observation, as the read showed it, caused by the command.
        seen = run.events[result["event_id"]]
        assert seen.stream == f"cw:ticket:{ticket_id}"
        assert seen.causation_id == command.command_id
        assert (seen.data["via"], seen.data["fetch"]) == ("fetch", command.command_id)
        assert seen.data["priority"] == CW_PRIORITIES["normal"]
        read_after.add(result["read_after"])
    assert len(read_after) == 1  # the log position before the one read


async def test_a_ticket_missing_from_the_answer_is_read_alone_and_its_fetch_parked(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, tmp_path: Path
) -> None:
    run = await _fetched(cw, tech, tmp_path / "events.db", deleted=2)
    # The read of all five, then the missing one alone: its 404, as a fetch of one meets it.
    assert run.sent == [("GET", "fetch"), ("GET", "fetch")]
    ends = {e.data["command_id"]: e for e in run.events.values()
            if e.type in kinds.OUTCOMES and e.data["kind"] == "cw.fetch_ticket"}  # fmt: skip
    assert {c.command_id for c in run.fetches} == set(ends)
    parked = ends[run.fetches[2].command_id]
    assert parked.type == kinds.COMMAND_PARKED and parked.data["remote_status"] == "404"
    others = [ends[c.command_id].type for n, c in enumerate(run.fetches) if n != 2]
    assert others == [kinds.COMMAND_DELIVERED] * (TICKETS - 1)


async def test_reads_that_were_not_fresh_are_tried_again_together(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, tmp_path: Path
) -> None:
    run = await _fetched(cw, tech, tmp_path / "events.db", changing=True)
    # Every ticket changed while first read: all five read again, with one request.
    assert run.sent == [("GET", "fetch"), ("GET", "fetch")]
    results = [
        run.events[derived_event_id("outbox", c.command_id, kinds.COMMAND_DELIVERED, "")].data[
            "result"
        ]
        for c in run.fetches
    ]
    assert {r["fresh"] for r in results} == {True}
    assert len({r["read_after"] for r in results}) == 1  # the second read's, for all
