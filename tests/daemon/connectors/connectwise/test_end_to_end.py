"""Nothing lost, nothing doubled: callbacks dropped, duplicated and reordered
by the simulator, the intake and the reconciliation poller together still
leave the event log agreeing with ConnectWise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from daemon.connectors.connectwise import install
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.intake import ROUTE as ROUTE_PATH
from daemon.connectors.connectwise.poller import ConnectWisePoller
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.simulators.connectwise import SimServer, fixture
from eventstore import EventStore
from tests.support.connectwise import callback_intake

TENANTS = {250: "acme", 251: "globex"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(tmp_path / "events.db")
    yield s
    await s.close()


async def test_faulty_callbacks_plus_polling_lose_and_double_nothing(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient,
    make_settings, store: EventStore, http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    app = web.Application()
    runner = web.AppRunner(app)
    # The route must exist before the runner freezes the app; the handler needs
    # the poller, which needs settings with the public URL: build in that order.
    holder: dict[str, ConnectWisePoller] = {}
    settings0: ConnectWiseSettings = make_settings()
    intake = callback_intake(
        store, settings0, TENANTS, http, kick=lambda tid, tenant: holder["p"].kick(tid, tenant)
    )
    app.router.add_post(ROUTE_PATH, intake.handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{ROUTE_PATH}"
    settings = make_settings(public_callback_url=url)
    holder["p"] = poller = ConnectWisePoller(store, cw, settings, TENANTS)
    try:
        assert (await install.install(cw, settings)).action == "installed"
        sim.faults.update({"drop_rate": 0.3, "duplicate_rate": 0.3, "seed": 7,
                           "reorder_callbacks": 2})  # fmt: skip
        created = []
        for i in range(12):
            company = (250, 251, 260)[i % 3]
            t = await tech.create_ticket({"summary": f"Incident {i}", "company": {"id": company},
                                          "board": {"id": fixture.BOARD_ID}})  # fmt: skip
            created.append(t["id"])
            if i % 2 == 0:
                await tech.update_ticket(t["id"], {"status": {"id": 411}})
                await cw.create_note(t["id"], f"SOC reply {i}", "Discussion")
        sim.callbacks.release_held()
        await sim.callbacks.drain()
        dropped = [d for d in sim.callbacks.deliveries if d.error == "dropped"]
        assert dropped, "the seed must drop some callbacks for this test to mean anything"
        metrics = intake.counts
        assert metrics["duplicate"] > 0, "the seed must duplicate some callbacks too"
        await poller.poll_once()
    finally:
        await runner.cleanup()

    for ticket_id in created:
        truth = sim.state.tickets[ticket_id]
        events = await store.read_stream(f"cw:ticket:{ticket_id}")
        if truth["_ref_company"] == 260:
            assert events == []  # not a tenant's ticket
            continue
        observed = [e for e in events if e.type == "connectwise.ticket.observed"]
        assert observed, f"ticket {ticket_id} never observed"
        latest = observed[-1].data
        assert latest["updated_at"] == truth["_info"]["lastUpdated"]
        assert latest["status_id"] == truth["_ref_status"]
        message_ids = [e.data["message_id"] for e in observed if "message_id" in e.data]
        assert len(message_ids) == len(set(message_ids)), "a callback was recorded twice"
        notes = [e.data["id"] for e in events if e.type == "connectwise.note.observed"]
        assert sorted(notes) == sorted(n["id"] for n in sim.state.notes[ticket_id])
