"""The SOC poller records each state of a ticket changed several times within one second.

A polled observation's id is derived from the ticket, its time, its content and
the observation it follows (``daemon/connectors/polling.py``), so a ticket that goes back
to an earlier state is recorded again and the same read twice is written once.
The simulator keeps one ticket's ``updated_at`` strictly increasing (a second
per change, an inference noted in its docstring), so unlike ConnectWise's test
this one cannot put two states on one time; it checks the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.poller import SocPoller
from daemon.connectors.soc.settings import SocSettings
from daemon.simulators.soc import SocSimulator
from eventstore import EventStore
from tests.support.soc import TENANTS

NOON = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[SocSimulator]:
    # Every change lands in the same second.
    async with SocSimulator(export_lag=0, webhook_retry_delay=0.01, clock=lambda: NOON) as s:
        yield s


async def test_each_state_of_a_ticket_changed_within_one_second_is_recorded_once(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore
) -> None:
    t = await client.create_ticket(subject="Flip flop", body="b", organization_id=9001)
    poller = SocPoller(store, client, settings, TENANTS, lambda: NOON)
    counts = []
    for priority in ("high", "urgent", "high"):
        await client.set_priority(t["id"], priority)
        poller.kick(t["id"], "acme")
        await poller.refresh_kicked()
        observed = [e for e in await store.read_stream(f"soc:ticket:{t['id']}")
                    if e.type == "soc.ticket.observed"]  # fmt: skip
        counts.append(len(observed))
    assert counts == [1, 2, 3]
    assert [e.data["priority"] for e in observed] == ["high", "urgent", "high"]
    # The same read again (a re-read page, a second kick) writes nothing.
    before = await store.last_position()
    poller.kick(t["id"], "acme")
    again = await poller.refresh_kicked()
    assert (again.tickets_recorded, again.notes_recorded) == (0, 0)
    await poller.poll_once()
    assert [e.position for e in await store.read_stream(f"soc:ticket:{t['id']}")][-1] <= before
