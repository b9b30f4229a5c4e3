"""A note made on a ticket socbridge created in ConnectWise, before the create's delivery was
recorded: mirrored once the create is found by its marker (the SOC side's twin of
``tests/daemon/outbox/soc/test_fetch_notes.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.connectwise.observe import note_event
from daemon.outbox.deliver import deliver
from daemon.outbox.fetch import fetch_notes
from daemon.simulators.connectwise import SimServer, fixture
from projections import kinds
from tests.support.history import Log, soc_seen


async def test_a_note_recorded_before_its_tickets_create_is_mirrored_after_it(
    sim: SimServer, cw: ConnectWiseClient, tech: ConnectWiseClient, tmp_path: Path
) -> None:
    log = await Log.open(tmp_path / "events.db")
    try:
        opened = soc_seen(11, "2026-11-29T10:00:00Z")  # an incident the SOC opened
        await log.add(dataclasses.replace(opened, data={**opened.data, "external_id": None}))
        create = log.command("cw.create_ticket")
        link = log.live.engine.state.links[create.link_id]  # type: ignore[union-attr]
        landed = await deliver(create, link, {"cw": ConnectWiseDesk(cw)}, maybe_sent=False)
        # socbridge dies before recording it; a technician writes a note on the new ticket.
        note = await tech.create_note(landed["id"], "Called the customer back", "Discussion")
        await log.add(note_event(note, landed["id"], "acme", api_member=fixture.API_MEMBER))
        found = await deliver(create, link, {"cw": ConnectWiseDesk(cw)}, maybe_sent=True)
        assert found == {"id": landed["id"], "found_by_marker": True}
        await log.deliver_command(create, found)
        [reread] = [c for c in log.outbox if c.kind == "cw.fetch_notes"]
        assert reread.params["api_member"] is None  # the test rules name none
        reread = dataclasses.replace(
            reread, params={**reread.params, "api_member": fixture.API_MEMBER}
        )
        link = log.live.engine.state.links[create.link_id]  # type: ignore[union-attr]
        result = await fetch_notes(log.store, reread, link, {"cw": ConnectWiseDesk(cw)})
        await log.deliver_command(reread, result)
        events = await log.events()
    finally:
        await log.close()
    assert result == {"recorded": 1}
    issued = [e.data for e in events if e.type == kinds.COMMAND_ISSUED]
    comments = [c for c in issued if c["kind"] == "soc.add_comment"]
    assert len(comments) == 1
    assert comments[0]["params"]["body"].startswith("Called the customer back")
