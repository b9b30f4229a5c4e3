"""``socbridge audit``: --remote catches drift the log never saw, --fix converges both sides.

The whole bridge runs on loopback (both simulators, the daemon in this
process); the audit opens the same SQLite file the daemon writes, as an
operator's second process would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from daemon.cli.audit import run_audit
from daemon.cli.main import main
from daemon.simulators.harness import Bridge
from projections import kinds
from tests.support.cli import audit_args as args
from tests.support.history import Log, outcome, soc_seen
from tests.support.tickets import soc_ticket_for

LOW = "Priority 4 - Schedule Maintenance"


async def drifted(bridge: Bridge) -> tuple[int, int]:
    """A linked pair, settled; then, the daemon stopped, its ConnectWise priority changes
    directly in the simulator (no callback, no lastUpdated move). Only a live read sees it:
    a running daemon's next poll would re-list the ticket at its watermark second and
    record the change before the audit looks, so the daemon stays stopped until the test
    starts it again."""
    cw = await bridge.technician.create_ticket("Beaconing from ACME-WS07")
    soc = await soc_ticket_for(bridge, cw["id"])
    await bridge.settled()
    await bridge.stop_daemon()
    assert bridge.rehearsal is not None
    bridge.rehearsal.cw.state.tickets[cw["id"]]["_ref_priority"] = 4  # Priority 4
    return cw["id"], soc["id"]


async def test_remote_detects_a_change_the_log_never_saw(
    bridge: Bridge,
) -> None:
    assert bridge.config is not None
    db = bridge.config.store.path
    quiet = await run_audit(db, bridge.config, args(remote=True))
    assert quiet["findings"] == [] and not quiet["needs_attention"]

    cw_id, _ = await drifted(bridge)
    local = await run_audit(db, bridge.config, args())
    assert not local["needs_attention"]  # the log alone cannot see it
    doc = await run_audit(db, bridge.config, args(remote=True))
    assert doc["needs_attention"] and doc["verify"]["ok"]
    found = [
        (f["kind"], f["link_id"], f["data"]["side"], f["data"]["live"]) for f in doc["findings"]
    ]
    assert found == [("remote-drift", f"cw:{cw_id}", "cw", "low")]


async def test_fix_appends_repairs_that_the_outbox_delivers_and_both_sides_converge(
    bridge: Bridge,
) -> None:
    assert bridge.config is not None
    db = bridge.config.store.path
    cw_id, soc_id = await drifted(bridge)
    before = (await run_audit(db, bridge.config, args()))["verify"]["checked"]
    doc = await run_audit(db, bridge.config, args(remote=True, fix=True))
    types = [r["type"] for r in doc["repairs"]]
    assert types == [kinds.REPAIR_DECIDED, kinds.COMMAND_ISSUED]
    assert all(r["position"] > before for r in doc["repairs"])  # appended, nothing rewritten
    await bridge.start_daemon()  # its outbox delivers the repair

    async def converged() -> bool:
        return bool((await bridge.analyst.ticket(soc_id))["priority"] == "low")

    await bridge.until(converged, "the repair to reach the SOC")
    assert (await bridge.technician.ticket(cw_id))["priority"]["name"] == LOW
    await bridge.settled()
    again = await run_audit(db, bridge.config, args(remote=True, fix=True))
    assert again["repairs"] == []  # both sides agree: nothing left to repair


def test_exit_codes_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def build(path: Path, abandon: bool) -> None:
        log = await Log.open(path)
        await log.linked()
        if abandon:
            await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
            command = log.command("cw.update_ticket")
            await log.add(outcome(command, kinds.COMMAND_ABANDONED, reason="x", attempt=1))
        await log.close()

    clean, dirty = tmp_path / "clean.db", tmp_path / "dirty.db"
    asyncio.run(build(clean, False))
    asyncio.run(build(dirty, True))
    assert main(["audit", "--db", str(clean)]) == 0
    assert "0 need attention" in capsys.readouterr().out
    assert main(["audit", "--db", str(dirty), "--json"]) == 1
    doc = orjson.loads(capsys.readouterr().out)
    assert {f["kind"] for f in doc["findings"]} == {"divergent", "command-abandoned"}
    size = dirty.stat().st_size
    assert main(["audit", "--db", str(dirty), "--fix"]) == 2  # needs the config's rules
    assert "--fix need --config" in capsys.readouterr().err
    assert dirty.stat().st_size == size


async def test_the_commands_work_from_a_real_config_and_print_no_secret(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bridge.rehearsal is not None
    config = str(bridge.rehearsal.config_path)
    await drifted(bridge)
    # The entry point runs its own event loop, as from a shell: give it a thread.
    code = await asyncio.to_thread(main, ["audit", "--config", config, "--remote"])
    out = capsys.readouterr().out
    assert code == 1 and "remote-drift" in out and "1 need attention" in out
    # The log is at rest (settled, the daemon stopped): every input is decided.
    code = await asyncio.to_thread(main, ["replay", "--config", config, "--policy", "status=cw"])
    out += capsys.readouterr().out
    assert code == 0 and "policy preview (status=cw): 0 of" in out
    folder = bridge.rehearsal.config_path.parent / "secrets"
    secrets = [p.read_text().strip() for p in folder.iterdir() if p.is_file()]
    assert secrets and not any(s in out for s in secrets if len(s) > 8)
