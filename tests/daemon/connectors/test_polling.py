"""The pollers' schedule: kicked tickets are read in rounds, so none waits on the others.

Under a steady stream of callbacks every ticket is kicked again within seconds of its
read. Each round reads the tickets kicked when it began, lowest id first; a ticket
kicked again meanwhile waits for the next round instead of going again at once.
"""

from __future__ import annotations

import asyncio

import structlog

from daemon.connectors.contract import PollReport
from daemon.connectors.polling import BasePoller


class Recording(BasePoller):
    """A poller whose every read kicks its ticket again: a callback stream."""

    def __init__(self) -> None:
        super().__init__(3600, structlog.get_logger("test"))
        self.read: list[int] = []

    async def refresh(self, ticket_id: int, tenant: str | None = None) -> PollReport:
        self.read.append(ticket_id)
        await asyncio.sleep(0)  # a read awaits its answer
        self.kick(ticket_id, tenant)  # changed again as soon as it was read
        return PollReport(seen=1)


async def test_kicked_tickets_are_read_in_rounds() -> None:
    poller = Recording()
    for ticket_id in (30, 10, 20):
        poller.kick(ticket_id, "acme")
    # (Bounded: a schedule that reads the lowest kicked id again and again never ends.)
    report = await asyncio.wait_for(poller.refresh_kicked(), 5)
    assert poller.read == [10, 20, 30] and report.seen == 3
    # Each was kicked again while the round ran: the next round reads them all again.
    await asyncio.wait_for(poller.refresh_kicked(), 5)
    assert poller.read == [10, 20, 30, 10, 20, 30]
