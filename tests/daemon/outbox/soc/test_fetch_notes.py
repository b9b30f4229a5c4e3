"""A reply made on a ticket socbridge created, before the create's delivery was recorded.

The create lands on the SOC; socbridge is killed (or the reply is lost) before it
records the delivery, so the new ticket is linked only after the restart, when the
outbox finds it by its marker. An analyst who replied on it meanwhile had the reply
recorded with no link to decide it on. The SIGKILL test met this once: the reply never
reached ConnectWise. Now a create found by its marker is followed by a re-read of the
ticket's comments, and the reply is mirrored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.connectors.soc import observe
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.desk import SocDesk
from daemon.outbox.deliver import deliver
from daemon.outbox.fetch import fetch_notes
from daemon.simulators.soc import SocSimulator
from projections import kinds
from tests.support.history import Log, cw_seen


def seen_comment(ticket_id: int, comment: dict[str, Any]) -> Any:
    """The reply as the SOC poller records it."""
    return observe.note_event(
        tenant="acme", ticket_id=ticket_id, comment_id=int(comment["id"]),
        body=comment.get("body"), public=True, author_id=None, author_is_staff=None,
        created_at=comment.get("created_at"), via="poll",
    )  # fmt: skip


async def test_a_reply_recorded_before_its_tickets_create_is_mirrored_after_it(
    sim: SocSimulator, client: SocClient, tmp_path: Path
) -> None:
    log = await Log.open(tmp_path / "events.db")
    try:
        await log.add(cw_seen(1, "2026-11-29T10:00:00Z"))  # routed: the SOC ticket is decided
        create = log.command("soc.create_ticket")
        link = log.live.engine.state.links[create.link_id]  # type: ignore[union-attr]
        landed = await deliver(create, link, {"soc": SocDesk(client)}, maybe_sent=False)
        # ... and socbridge dies before recording it. The analyst replies on the new ticket.
        await client.add_comment(landed["id"], "Isolated the host, see attached", public=True)
        reply = next(c for c in await client.list_comments(landed["id"])
                     if "Isolated the host" in (c.get("body") or ""))  # fmt: skip
        await log.add(seen_comment(landed["id"], reply))
        # Restarted, the outbox sends the create again: it finds the ticket by its marker.
        found = await deliver(create, link, {"soc": SocDesk(client)}, maybe_sent=True)
        assert found == {"id": landed["id"], "found_by_marker": True}
        await log.deliver_command(create, found)
        [reread] = [c for c in log.outbox if c.kind == "soc.fetch_notes"]
        link = log.live.engine.state.links[create.link_id]  # type: ignore[union-attr]
        result = await fetch_notes(log.store, reread, link, {"soc": SocDesk(client)})
        await log.deliver_command(reread, result)
        events = await log.events()
    finally:
        await log.close()
    notes = [
        e for e in events if e.type == kinds.COMMAND_ISSUED and e.data["kind"] == "cw.add_note"
    ]
    assert len(notes) == 1
    assert notes[0].data["params"]["text"].startswith("Isolated the host, see attached")
    # The ticket's first comment is the body socbridge wrote: recognised, not mirrored back.
    assert result == {"recorded": 2}
    assert any(e.type == kinds.ECHO_RECOGNISED and e.data.get("kind") == "note" for e in events)


async def test_a_create_delivered_at_once_reads_nothing_again(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "events.db")
    try:
        await log.add(cw_seen(1, "2026-11-29T10:00:00Z"))
        await log.deliver("soc.create_ticket", {"id": 11})
        kinds_issued = [c.kind for c in log.outbox]
    finally:
        await log.close()
    assert "soc.fetch_notes" not in kinds_issued
