"""One scenario per rule, through the running daemon and both simulators over loopback."""

from __future__ import annotations

from daemon.simulators.harness import Bridge
from projections import kinds
from tests.support.tickets import cw_ticket_for, soc_ticket_for


async def test_r1_routed_connectwise_ticket_starts_syncing(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket(
        "Ransomware alert on ACME-FS01", priority="Priority 2 - Quick Response"
    )
    soc = await soc_ticket_for(bridge, cw["id"])
    assert soc["organization_id"] == 9001
    assert soc["priority"] == "high"  # R6: the SOC priority whose mapping points at P2
    await bridge.settled()
    link = bridge.engine.state.link_for("cw", cw["id"])
    assert link is not None and link.state == "linked" and link.soc_id == soc["id"]
    # Once linked, a later status change does not stop the sync (R1).
    await bridge.technician.set(cw["id"], status="In Progress")
    await bridge.technician.set(cw["id"], priority="Priority 1 - Emergency Response")

    async def urgent() -> bool:
        return (await bridge.analyst.ticket(soc["id"]))["priority"] == "urgent"

    await bridge.until(urgent, "the priority change to reach the SOC")


async def test_r1_ticket_without_routing_status_is_not_synced(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket("Printer offline", status="New")
    await bridge.settled()
    assert bridge.engine.state.link_for("cw", cw["id"]) is None
    assert await bridge.analyst.tickets() == []


async def test_r2_r5_r6_soc_incident_creates_connectwise_ticket(bridge: Bridge) -> None:
    soc = await bridge.analyst.create_ticket(
        "Impossible travel for j.doe", "Sign-ins from two continents", priority="urgent"
    )
    cw = await cw_ticket_for(bridge, soc["id"])
    assert cw["board"]["name"] == "SOC Incidents"  # R2
    assert cw["source"]["name"] == "SOC Platform"  # R5
    assert cw["priority"]["name"] == "Priority 1 - Emergency Response"  # R6
    assert cw["company"]["id"] == 250
    # The description (first comment) arrives as a note of the configured type (R8).

    async def described() -> list:  # type: ignore[type-arg]
        notes = await bridge.technician.notes(cw["id"])
        return [n for n in notes if "Sign-ins from two continents" in n["text"]]

    [note] = await bridge.until(described, "the incident's description as a note")
    assert note["detailDescriptionFlag"] is True
    await bridge.settled()
    notes = await bridge.technician.notes(cw["id"])
    assert sum("Sign-ins from two continents" in n["text"] for n in notes) == 1


async def test_r3_unlinked_ticket_stops_syncing_for_good(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket("Phishing report")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    await bridge.technician.set(cw["id"], status="Unlinked")

    async def unlinked() -> bool:
        link = bridge.engine.state.link_for("cw", cw["id"])
        return link is not None and link.state == "unlinked"

    await bridge.until(unlinked, "the link to be unlinked")
    await bridge.analyst.comment(soc["id"], "Any update?")
    await bridge.analyst.set(soc["id"], priority="urgent")
    await bridge.technician.set(cw["id"], status="Send to SOC")
    await bridge.settled()
    issued_after = [
        e
        for e in await bridge.events(f"cw:{cw['id']}")
        if e.type == kinds.COMMAND_ISSUED
        and e.position > bridge.engine.state.links[f"cw:{cw['id']}"].unlinked_at
    ]
    assert issued_after == []
    notes = await bridge.technician.notes(cw["id"])
    assert not any("Any update?" in n["text"] for n in notes)
    assert len(await bridge.analyst.tickets()) == 1  # never linked again


async def test_r7_solve_and_reopen_both_ways(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket("Malware on laptop")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    await bridge.analyst.set(soc["id"], status="solved")

    async def cw_status(name: str) -> bool:
        return (await bridge.technician.ticket(cw["id"]))["status"]["name"] == name

    await bridge.until(lambda: cw_status("Solved"), "ConnectWise to be Solved")
    await bridge.settled()
    await bridge.analyst.set(soc["id"], status="open")  # reopened after solved
    await bridge.until(lambda: cw_status("Unresolved"), "ConnectWise to be Unresolved")
    await bridge.settled()
    # And the other way: ConnectWise into Solved solves the SOC ticket, out of it reopens.
    await bridge.technician.set(cw["id"], status="Solved")

    async def soc_status(name: str) -> bool:
        return (await bridge.analyst.ticket(soc["id"]))["status"] == name

    await bridge.until(lambda: soc_status("solved"), "the SOC ticket to be solved")
    await bridge.settled()
    await bridge.technician.set(cw["id"], status="In Progress")
    await bridge.until(lambda: soc_status("open"), "the SOC ticket to be reopened")


async def test_r8_notes_both_ways_of_the_configured_types_only(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket("Suspicious PowerShell")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    await bridge.analyst.comment(soc["id"], "Isolate the host please")

    async def note_in_cw() -> list:  # type: ignore[type-arg]
        notes = await bridge.technician.notes(cw["id"])
        return [n for n in notes if "Isolate the host please" in n["text"]]

    [note] = await bridge.until(note_in_cw, "the SOC reply as a ConnectWise note")
    assert note["detailDescriptionFlag"] is True  # note_type_used = Discussion
    await bridge.technician.note(cw["id"], "Host isolated", "Discussion")
    await bridge.technician.note(cw["id"], "Internal: user is the CFO", "Internal Analysis")

    async def comment_in_soc() -> list:  # type: ignore[type-arg]
        return [c for c in await bridge.analyst.comments(soc["id"]) if "Host isolated" in c["body"]]

    await bridge.until(comment_in_soc, "the Discussion note on the SOC")
    await bridge.settled()
    bodies = [c["body"] for c in await bridge.analyst.comments(soc["id"])]
    assert not any("user is the CFO" in b for b in bodies)  # not a type sent to the SOC
    assert sum("Host isolated" in b for b in bodies) == 1
    # Notes socbridge wrote never echo back: one note per SOC reply, one comment per note.
    notes = await bridge.technician.notes(cw["id"])
    assert sum("Isolate the host please" in n["text"] for n in notes) == 1
    skipped = [e for e in await bridge.events(f"cw:{cw['id']}") if e.type == kinds.NOTE_SKIPPED]
    assert len(skipped) == 1 and "Internal Analysis" in skipped[0].data["reason"]


async def test_r9_tenant_with_sync_off_is_neither_read_nor_written(bridge: Bridge) -> None:
    cw = await bridge.technician.create_ticket("Globex alert", company=251)
    soc = await bridge.analyst.create_ticket("Globex incident", "details", organization=9002)
    await bridge.settled()
    assert bridge.engine.state.links == {}
    tickets = await bridge.analyst.tickets()
    assert [t["id"] for t in tickets] == [soc["id"]]
    assert await bridge.technician.tickets(f"externalXRef = 'socbridge:soc:{soc['id']}'") == []
    observed = [e async for e in bridge.store.read() if e.tenant == "globex"]
    assert observed == []
    assert cw["id"]


async def test_r16_removing_the_integration_stops_syncing_and_keeps_the_log(
    bridge: Bridge,
) -> None:
    from daemon.cli.remove import remove_integration
    from eventstore import verify

    cw = await bridge.technician.create_ticket("Before removal")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    before = [e async for e in bridge.store.read()]
    assert bridge.config is not None and bridge.rehearsal is not None
    done = await remove_integration(bridge.config)
    assert "removed" in done["connectwise"] and done["soc_webhook"] == "removed"
    assert bridge.rehearsal.cw.state.callbacks == {}

    async def removed() -> bool:
        return bridge.engine.state.removed

    await bridge.until(removed, "the daemon to fold the removal")
    await bridge.analyst.comment(soc["id"], "After removal")
    await bridge.technician.set(cw["id"], priority="Priority 1 - Emergency Response")
    await bridge.technician.create_ticket("Routed after removal")
    await bridge.settled()
    after = [e async for e in bridge.store.read()]
    assert after[: len(before)] == before  # the log is kept, nothing rewritten
    assert (await verify(bridge.store)).ok
    new = after[len(before) :]
    assert not [e for e in new if e.type in (kinds.COMMAND_ISSUED, kinds.LINK_REQUESTED)]
    notes = await bridge.technician.notes(cw["id"])
    assert not any("After removal" in n["text"] for n in notes)
    assert len(await bridge.analyst.tickets()) == 1


def test_r4_daemon_refuses_an_unlinked_status_that_is_also_the_routing_status(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    import contextlib
    import io

    from daemon.cli.main import main
    from daemon.simulators.rehearsal import write_config

    config = tmp_path / "socbridge.toml"
    write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 3, 5.0)
    text = config.read_text().replace(
        'unlinked_status = "Unlinked"', 'unlinked_status = "Send to SOC"'
    )
    assert text != config.read_text()
    config.write_text(text)
    # ``socbridge run``'s real command line, in this process: it refuses the file before it
    # starts anything (the daemon tests run ``socbridge run`` as a process).
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", "--config", str(config)])
    assert code == 2
    assert "unlinked_status" in err.getvalue() and "Send to SOC" in err.getvalue()
    assert not (tmp_path / "events.db").exists()  # nothing was started or written
