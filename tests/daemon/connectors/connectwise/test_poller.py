"""Reconciliation polling against the simulator, with callbacks lost."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.connectwise.errors import ConnectWiseError
from daemon.connectors.connectwise.poller import WATERMARK_STREAM, ConnectWisePoller
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.contract import PollReport
from daemon.outbox.fetch import fetch_ticket
from daemon.simulators.connectwise import SimServer, fixture
from daemon.simulators.connectwise.faults import ApiFault
from eventstore import EventStore, NewEvent
from projections.state import Link, PendingCommand

TENANTS = {250: "acme", 251: "globex"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(tmp_path / "events.db")
    yield s
    await s.close()


def on_board(company: int, summary: str) -> dict:
    return {"summary": summary, "company": {"id": company}, "board": {"id": fixture.BOARD_ID}}


async def test_poll_appends_what_callbacks_missed_and_advances_watermark(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    settings: ConnectWiseSettings, store: EventStore,
) -> None:  # fmt: skip
    a = await tech.create_ticket({**on_board(250, "Missed"), "initialDescription": "first words"})
    other = await tech.create_ticket(on_board(260, "Not ours"))
    await tech.create_ticket({"summary": "Help desk", "company": {"id": 250}, "board": {"id": 1}})
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    report = await poller.poll_once()
    assert (report.seen, report.tickets_recorded, report.notes_recorded, report.ignored) == (
        2, 1, 1, 1,
    )  # fmt: skip
    events = await store.read_stream(f"cw:ticket:{a['id']}")
    assert [e.type for e in events] == ["connectwise.ticket.observed", "connectwise.note.observed"]
    assert events[0].data["via"] == "poll" and events[1].data["section"] == "Discussion"
    assert await store.read_stream(f"cw:ticket:{other['id']}") == []
    assert await poller.watermark() == sim.state.tickets[other["id"]]["_info"]["lastUpdated"]

    again = await poller.poll_once()
    assert (again.tickets_recorded, again.notes_recorded) == (0, 0)

    await tech.update_ticket(a["id"], {"status": {"id": fixture.STATUS_IDS["Send to SOC"]}})
    await tech.create_note(a["id"], "more detail", "Discussion")
    third = await ConnectWisePoller(store, cw, settings, TENANTS).poll_once()  # fresh: durable wm
    assert (third.tickets_recorded, third.notes_recorded) == (1, 1)
    last = (await store.read_stream(f"cw:ticket:{a['id']}"))[-2]
    assert last.data["status"] == "Send to SOC"
    assert len(await store.read_stream(WATERMARK_STREAM)) >= 1


async def test_watermark_excludes_older_and_does_not_repeat_equal(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    make_settings, store: EventStore,
) -> None:  # fmt: skip
    settings = make_settings(poll_initial_lookback_hours=None)  # fixed 2026-03 clock below
    sim.state.clock = lambda: "2026-03-01T09:00:00Z"
    older = await tech.create_ticket(on_board(250, "Older"))
    sim.state.clock = lambda: "2026-03-01T10:00:00Z"
    at_mark = await tech.create_ticket(on_board(250, "At the watermark"))
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    await poller.poll_once()
    assert await poller.watermark() == "2026-03-01T10:00:00Z"
    sim.state.clock = lambda: "2026-03-01T11:00:00Z"
    new = await tech.create_ticket(on_board(251, "New"))
    report = await poller.poll_once()
    # lastUpdated >= [10:00]: the older ticket is not listed, the one at the
    # watermark is listed again but not appended again.
    assert (report.seen, report.tickets_recorded) == (2, 1)
    assert (await store.read_stream(f"cw:ticket:{new['id']}"))[0].tenant == "globex"
    assert len(await store.read_stream(f"cw:ticket:{at_mark['id']}")) == 1
    assert len(await store.read_stream(f"cw:ticket:{older['id']}")) == 1


async def test_run_loop_refreshes_kicked_ticket_and_stops(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    make_settings, store: EventStore,
) -> None:  # fmt: skip
    settings = make_settings(poll_interval_seconds=3600)
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    t = await tech.create_ticket(on_board(250, "Kick me"))
    await tech.create_note(t["id"], "note to fetch", "Discussion")
    poller.kick(t["id"])

    async def noted() -> None:
        while not any(e.type == "connectwise.note.observed"
                      for e in await store.read_stream(f"cw:ticket:{t['id']}")):  # fmt: skip
            await asyncio.sleep(0.01)

    await asyncio.wait_for(noted(), timeout=5)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert task.done() and task.exception() is None


async def test_a_callbacks_kick_reads_the_notes_alone_and_a_whole_kick_wins(
    tech: ConnectWiseClient, cw: ConnectWiseClient, settings: ConnectWiseSettings,
    store: EventStore,
) -> None:  # fmt: skip
    # A callback recorded the ticket already: its kick costs one request, the notes.
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    t = await tech.create_ticket(on_board(250, "Callback with a note"))
    await tech.create_note(t["id"], "said in a callback's wake", "Discussion")
    before = cw.remote.attempts_made
    poller.kick_notes(t["id"], "acme")
    report = await poller.refresh_kicked()
    assert cw.remote.attempts_made - before == 1
    assert (report.seen, report.notes_recorded) == (0, 1)
    stream = await store.read_stream(f"cw:ticket:{t['id']}")
    assert [e.type for e in stream] == ["connectwise.note.observed"]
    # Read again, nothing new is recorded.
    poller.kick_notes(t["id"], "acme")
    assert (await poller.refresh_kicked()).notes_recorded == 0
    # A whole read asked for (the outbox found the ticket changed) is not narrowed by a
    # callback's kick after it, nor before it.
    for kicks in (("kick", "kick_notes"), ("kick_notes", "kick")):
        for kick in kicks:
            getattr(poller, kick)(t["id"], "acme")
        before = cw.remote.attempts_made
        assert (await poller.refresh_kicked()).seen == 1
        assert cw.remote.attempts_made - before == 2


async def test_a_callbacks_kick_for_a_ticket_deleted_since_reads_nothing_and_fails_nothing(
    tech: ConnectWiseClient, cw: ConnectWiseClient, settings: ConnectWiseSettings,
    store: EventStore,
) -> None:  # fmt: skip
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    t = await tech.create_ticket(on_board(250, "Gone before its notes were read"))
    await tech.delete(f"service/tickets/{t['id']}")
    poller.kick_notes(t["id"], "acme")
    report = await poller.refresh_kicked()  # a 404 on its notes is not a failed refresh
    assert (report.seen, report.notes_recorded) == (0, 0)
    assert await store.read_stream(f"cw:ticket:{t['id']}") == []


async def test_first_poll_looks_back_only_so_far(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    make_settings, store: EventStore,
) -> None:  # fmt: skip
    sim.state.clock = lambda: "2026-03-01T09:00:00Z"
    ancient = await tech.create_ticket(on_board(250, "Closed years ago"))
    sim.state.clock = lambda: "2026-03-05T09:00:00Z"
    recent = await tech.create_ticket(on_board(250, "Yesterday"))
    settings = make_settings(poll_initial_lookback_hours=48)
    now = lambda: datetime(2026, 3, 6, 9, 0, tzinfo=UTC)  # noqa: E731
    report = await ConnectWisePoller(store, cw, settings, TENANTS, now=now).poll_once()
    assert report.seen == 1
    assert await store.read_stream(f"cw:ticket:{ancient['id']}") == []
    assert len(await store.read_stream(f"cw:ticket:{recent['id']}")) == 1


async def test_refresh_of_a_busy_ticket_reads_the_end_of_its_stream_only(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    settings: ConnectWiseSettings, store: EventStore, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import daemon.connectors.polling as observed_module

    t = await tech.create_ticket({**on_board(250, "Busy"), "initialDescription": "first words"})
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    await poller.refresh(t["id"])  # the ticket and its note
    stream = f"cw:ticket:{t['id']}"
    # Many callbacks later: the stream is long, its first note far from the end.
    monkeypatch.setattr(observed_module, "RECENT_EVENTS", 4)
    filler = [
        NewEvent(stream=stream, type="connectwise.ticket.observed", tenant="acme",
                 data={**(await store.read_stream(stream))[0].data, "message_id": f"m{i}"})
        for i in range(20)
    ]  # fmt: skip
    await store.append(filler)
    reads: list[int] = []
    real = store.read_stream

    async def spy(name: str, from_version: int = 1) -> list:  # type: ignore[type-arg]
        reads.append(from_version)
        return await real(name, from_version)

    monkeypatch.setattr(store, "read_stream", spy)
    report = await poller.refresh(t["id"])
    # Nothing new: the unchanged ticket and the note recorded long ago are not appended again.
    assert (report.tickets_recorded, report.notes_recorded) == (0, 0)
    assert reads == [22 - 4 + 1]

    await tech.create_note(t["id"], "more detail", "Discussion")
    await tech.update_ticket(t["id"], {"status": {"id": fixture.STATUS_IDS["Send to SOC"]}})
    again = await poller.refresh(t["id"])
    assert (again.tickets_recorded, again.notes_recorded) == (1, 1)

    # A stream whose last ticket observation is further back is read further back.
    notes_only = [
        NewEvent(stream=stream, type="connectwise.note.observed", tenant="acme", data={"i": i})
        for i in range(6)
    ]
    await store.append(notes_only)
    reads.clear()
    assert (await poller.refresh(t["id"])).tickets_recorded == 0
    assert len(reads) == 2 and reads[1] < reads[0]


async def test_a_kick_refreshes_the_kicked_ticket_only_the_full_pass_waits_its_interval(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    make_settings, store: EventStore,
) -> None:  # fmt: skip
    settings = make_settings(poll_interval_seconds=3600)
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    passes: list[PollReport] = []
    first_pass_done = asyncio.Event()
    poller.on_pass(lambda report: (passes.append(report), first_pass_done.set()))
    refreshed: dict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)
    refresh = poller.refresh

    async def noted(ticket_id: int, tenant: str | None = None) -> PollReport:
        report = await refresh(ticket_id, tenant)
        refreshed[ticket_id].set()
        return report

    poller.refresh = noted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    # The first full pass, at start, must have listed the board before the tickets
    # exist; otherwise a slow host lets it find the unkicked one.
    await asyncio.wait_for(first_pass_done.wait(), timeout=5)
    unkicked = await tech.create_ticket(on_board(250, "Only the full pass finds me"))
    kicked = await tech.create_ticket(on_board(250, "Kick me"))
    poller.kick(kicked["id"])
    await asyncio.wait_for(refreshed[kicked["id"]].wait(), timeout=5)
    # A later kick is read only once the loop has moved past the first one: had that
    # kick set off a full pass, the pass would have run before this refresh.
    sentinel = await tech.create_ticket(on_board(250, "Kick me too"))
    poller.kick(sentinel["id"])
    await asyncio.wait_for(refreshed[sentinel["id"]].wait(), timeout=5)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    # One callback costs the kicked ticket's reads, not a pass over the whole board.
    assert await store.read_stream(f"cw:ticket:{kicked['id']}") != []
    assert await store.read_stream(f"cw:ticket:{unkicked['id']}") == []
    assert len(passes) == 1


async def test_the_pollers_reads_leave_room_in_the_rate_limit_for_the_outbox(
    tech: ConnectWiseClient, make_settings, http, store: EventStore,
) -> None:  # fmt: skip
    # The daemon's poller and outbox share one client, so one 5 req/s limit.
    settings = make_settings(requests_per_second=5)
    cw = await ConnectWiseClient.connect(settings, settings.load_keys(), http)
    t = await tech.create_ticket(on_board(250, "Busy"))
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    for _ in range(6):  # twelve reads: more than the limit lets through at once
        await poller.refresh(t["id"])
    assert len(await store.read_stream(f"cw:ticket:{t['id']}")) == 1
    # However many reads the poller queued, a delivery's read and write can go out at
    # once: they leave room for two (daemon.connectors.remote.BACKGROUND_RESERVE).
    assert cw.remote._limiter.has_capacity(2)


async def test_a_ticket_back_to_an_earlier_state_within_one_second_is_recorded_again(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    settings: ConnectWiseSettings, store: EventStore,
) -> None:  # fmt: skip
    # lastUpdated has one-second resolution: all three states below share one time.
    sim.state.clock = lambda: "2026-11-29T12:00:00Z"
    t = await tech.create_ticket(on_board(250, "Flip flop"))
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    was = t["priority"]["id"]
    low = 4  # "Priority 4 - Schedule Maintenance" (fixture.priorities)
    seen = [(await poller.refresh(t["id"])).tickets_recorded]
    for priority in (low, was):
        await tech.update_ticket(t["id"], {"priority": {"id": priority}})
        seen.append((await poller.refresh(t["id"])).tickets_recorded)
    assert seen == [1, 1, 1]
    observed = [e for e in await store.read_stream(f"cw:ticket:{t['id']}")
                if e.type == "connectwise.ticket.observed"]  # fmt: skip
    assert [e.data["priority"] for e in observed] == [
        t["priority"]["name"], "Priority 4 - Schedule Maintenance", t["priority"]["name"],
    ]  # fmt: skip
    assert len({e.data["updated_at"] for e in observed}) == 1
    # The same read again (a crash before the watermark, say) writes nothing.
    assert (await poller.refresh(t["id"])).tickets_recorded == 0
    assert (await poller.poll_once()).tickets_recorded == 0


async def test_a_fetched_ticket_unchanged_since_is_not_recorded_again_by_the_poll(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient,
    settings: ConnectWiseSettings, store: EventStore,
) -> None:  # fmt: skip
    t = await tech.create_ticket(on_board(250, "Fetched"))
    poller = ConnectWisePoller(store, cw, settings, TENANTS)
    await poller.refresh(t["id"])
    # The outbox reads the ticket again for sync (a fetch records read_after and fresh).
    command = PendingCommand("c-1", "cw.fetch_ticket", "l-1", "acme",
                             {"api_member": settings.api_member}, issued_at=1)  # fmt: skip
    link = Link("l-1", "acme", "cw", requested_at=1, cw_id=t["id"])
    fetched = await fetch_ticket(store, command, link, {"cw": ConnectWiseDesk(cw)})
    assert fetched["fresh"] is True
    before = await store.last_position()
    for _ in range(3):
        assert (await poller.refresh(t["id"])).tickets_recorded == 0
        assert (await poller.poll_once()).tickets_recorded == 0
    stream = await store.read_stream(f"cw:ticket:{t['id']}")
    assert max(e.position for e in stream) <= before


@dataclass
class Clocks:
    """ConnectWise's clock (``lastUpdated`` stamps) and the poller's monotonic one, set by
    the test: whether a second is closed depends on both."""

    server: str = "2026-12-01T08:00:00Z"
    local: float = 1000.0

    def at(self, server: str, *, after: float) -> None:
        self.server, self.local = server, self.local + after


@pytest.fixture
def clocks(sim: SimServer) -> Clocks:
    c = Clocks()
    sim.state.clock = lambda: c.server
    return c


@pytest.fixture
def timed(
    cw: ConnectWiseClient, make_settings, store: EventStore, clocks: Clocks
) -> Callable[[], ConnectWisePoller]:
    """New pollers (a new process each) on the test's clocks, with no look-back (the
    clocks are in 2026-12)."""
    settings = make_settings(poll_initial_lookback_hours=None)
    return lambda: ConnectWisePoller(store, cw, settings, TENANTS, monotonic=lambda: clocks.local)


async def passes_cost(
    poller: ConnectWisePoller, cw: ConnectWiseClient, times: int = 1
) -> list[tuple[int, int]]:
    """(requests, tickets seen) of each of ``times`` passes."""
    costs = []
    for _ in range(times):
        before = cw.remote.attempts_made
        report = await poller.poll_once()
        costs.append((cw.remote.attempts_made - before, report.seen))
    return costs


async def test_idle_passes_after_the_watermark_second_closed_cost_one_request(
    tech: ConnectWiseClient, cw: ConnectWiseClient, clocks: Clocks, timed,
) -> None:  # fmt: skip
    for i in range(4):
        await tech.create_ticket(on_board(250, f"Linked {i}"))
    poller = timed()
    # The first pass and any that start within the second's end list it again: the board
    # list and the four tickets' notes.
    assert await passes_cost(poller, cw, 2) == [(5, 4), (5, 4)]
    clocks.at("2026-12-01T08:00:01Z", after=1.0)
    assert await passes_cost(poller, cw) == [(5, 4)]  # the margin is not over yet
    # This pass starts after 08:00:00 ended on ConnectWise's clock: it closes the second.
    clocks.at("2026-12-01T08:00:01Z", after=0.25)
    assert await passes_cost(poller, cw) == [(5, 4)]
    clocks.at("2026-12-01T08:05:01Z", after=300)
    assert await passes_cost(poller, cw, 3) == [(1, 0)] * 3
    assert await poller.watermark() == "2026-12-01T08:00:00Z"


async def test_a_change_and_a_note_in_the_watermark_second_after_a_pass_are_observed(
    tech: ConnectWiseClient, cw: ConnectWiseClient, store: EventStore, clocks: Clocks, timed,
) -> None:  # fmt: skip
    t = await tech.create_ticket(on_board(250, "Same second"))
    stream = f"cw:ticket:{t['id']}"
    poller = timed()
    await poller.poll_once()
    # Still 08:00:00 on ConnectWise's clock: both are stamped with the watermark second.
    await tech.update_ticket(t["id"], {"priority": {"id": 4}})
    await tech.create_note(t["id"], "same second", "Discussion")
    clocks.at("2026-12-01T08:00:00Z", after=0.9)
    report = await poller.poll_once()
    assert (report.tickets_recorded, report.notes_recorded) == (1, 1)
    [*_, observed, note] = await store.read_stream(stream)
    assert observed.data["priority"] == "Priority 4 - Schedule Maintenance"
    assert observed.data["updated_at"] == "2026-12-01T08:00:00Z"
    assert note.data["text"] == "same second"
    # Once more, after those passes, late in the second; then the second ends.
    await tech.create_note(t["id"], "last moment", "Discussion")
    clocks.at("2026-12-01T08:00:01Z", after=0.35)
    report = await poller.poll_once()  # the closing pass
    assert (report.seen, report.notes_recorded) == (1, 1)
    assert (await store.read_stream(stream))[-1].data["text"] == "last moment"
    # Closed: a change in a later second is still listed.
    clocks.at("2026-12-01T08:00:02Z", after=1.0)
    await tech.update_ticket(t["id"], {"priority": {"id": t["priority"]["id"]}})
    assert await passes_cost(poller, cw) == [(2, 1)]
    assert await poller.watermark() == "2026-12-01T08:00:02Z"


async def test_after_a_restart_the_watermark_second_is_listed_again(
    tech: ConnectWiseClient, cw: ConnectWiseClient, clocks: Clocks, timed,
) -> None:  # fmt: skip
    await tech.create_ticket(on_board(250, "Before the restart"))
    first = timed()
    await first.poll_once()
    clocks.at("2026-12-01T08:00:02Z", after=2.0)
    assert await passes_cost(first, cw, 2) == [(2, 1), (1, 0)]
    # A new process knows the watermark from the log, not whether its second was closed.
    restarted = timed()
    assert await passes_cost(restarted, cw) == [(2, 1)]
    clocks.at("2026-12-01T08:00:04Z", after=2.0)
    assert await passes_cost(restarted, cw, 2) == [(2, 1), (1, 0)]


async def test_a_pass_that_fails_does_not_close_the_watermark_second(
    sim: SimServer, tech: ConnectWiseClient, cw: ConnectWiseClient, clocks: Clocks, timed,
) -> None:  # fmt: skip
    await tech.create_ticket(on_board(250, "Notes refused once"))
    poller = timed()
    await poller.poll_once()
    clocks.at("2026-12-01T08:00:02Z", after=2.0)
    sim.faults.api.append(ApiFault(400, path_contains="/notes"))
    with pytest.raises(ConnectWiseError):
        await poller.poll_once()  # would have closed the second; listed only part of it
    assert await passes_cost(poller, cw, 2) == [(2, 1), (1, 0)]
