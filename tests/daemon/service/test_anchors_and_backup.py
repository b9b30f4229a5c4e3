"""The running daemon anchors its log; a rehashed log refuses the start; a backup taken
under load restores, verifies, and replays to the same projections.

The daemon is ``socbridge run`` as a subprocess against the simulators; the
commands are the installed entry point, as an operator runs them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

import orjson
import pytest

from eventstore.anchors import anchors_path, read_anchors
from projections import kinds
from tests.eventstore.test_anchors import rehash_from
from tests.support.live import Live, live_daemon, socbridge
from tests.support.process import eventually

pytestmark = pytest.mark.slow


async def test_anchored_at_start_and_stop_and_a_rehashed_log_refuses_the_start(
    tmp_path: Path,
) -> None:
    async with live_daemon(tmp_path) as live:
        anchors = anchors_path(live.db)
        assert stat.S_IMODE(os.stat(anchors).st_mode) == 0o600
        assert read_anchors(anchors)[-1].reason == "start"
        line = await live.log_line(lambda x: x["event"] == "store.anchored", "the start anchor")
        assert line["reason"] == "start" and len(line["hash"]) == 64
        soc = await live.analyst.create_ticket("Phishing at ACME", "A user clicked a link")
        await live.reaches_connectwise(soc["id"])
        assert await live.daemon.stop() == 0
        events = await live.events()
        stop = read_anchors(anchors)[-1]
        assert stop.reason == "stop" and stop.position == events[-1].position

        # Someone with write access edits an event and recomputes every later hash.
        middle = len(events) // 2
        rehash_from(live.db, middle, {"edited": True})
        verified = await socbridge("verify", "--config", str(live.config_path), entry=True)
        assert verified.returncode == 1
        assert f"BROKEN at position {stop.position}" in verified.stdout
        assert "changed between positions" in verified.stdout

        before = len(await live.events())
        await live.daemon.start()
        assert live.daemon.proc is not None
        assert await asyncio.wait_for(live.daemon.proc.wait(), 30) == 3
        said = live.daemon.log_path.read_text()
        assert f"fails its check at position {stop.position}" in said
        assert "socbridge verify" in said and "--accept-broken-chain" in said
        assert "Traceback" not in said
        assert len(await live.events()) == before  # a refused start appends nothing

        await live.daemon.start("--accept-broken-chain")
        await live.daemon.ready(live.http)
        accepted = await live.events(kinds.CHAIN_ACCEPTED)
        assert [e.data["first_bad_position"] for e in accepted] == [stop.position]


async def _load(live: Live, stop: asyncio.Event) -> int:
    """A technician opening tickets and changing their priorities, as fast as it goes."""
    n = 0
    while not stop.is_set():
        ticket = await live.technician.create_ticket(f"Load ticket {n}")
        await live.technician.set(ticket["id"], priority="Priority 1 - Emergency Response")
        n += 1
    return n


async def test_a_backup_under_load_restores_verifies_and_replays_the_same(
    tmp_path: Path,
) -> None:
    async with live_daemon(tmp_path) as live:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(live, stop))

        async def some_events() -> bool:
            return len(await live.events()) > 30

        await eventually(some_events, "the load to be under way", 30)
        dest = tmp_path / "backups" / "events-backup.db"
        dest.parent.mkdir()
        made = await socbridge(
            "backup", str(dest), "--config", str(live.config_path), "--json", entry=True
        )
        assert made.returncode == 0, made.stderr
        taken = orjson.loads(made.stdout)
        assert not load.done()  # taken while the daemon was busy
        stop.set()
        assert await load > 0
        refused = await socbridge("backup", str(dest), "--config", str(live.config_path),
                                  entry=True)  # fmt: skip
        assert refused.returncode == 2 and "never overwrites" in refused.stderr

        # Restore into a new folder, as docs/operations.md says.
        restored = tmp_path / "restored"
        restored.mkdir()
        shutil.copy2(dest, restored / "events.db")
        shutil.copy2(anchors_path(dest), anchors_path(restored / "events.db"))
        verified = await socbridge("verify", "--db", str(restored / "events.db"), entry=True)
        assert verified.returncode == 0, verified.stdout
        assert "anchors agree" in verified.stdout

        async def digest(*args: str) -> str:
            done = await socbridge("replay", *args, "--dry-run", "--json", entry=True)
            assert done.returncode == 0, done.stderr
            return str(orjson.loads(done.stdout)["summary"]["state_digest"])

        from_backup = await digest("--db", str(restored / "events.db"))
        live_then = await digest("--db", str(live.db), "--until", str(taken["position"]))
        assert from_backup == live_then
        assert taken["position"] < (await live.events())[-1].position
