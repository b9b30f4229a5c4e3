"""A background task that raises is restarted with backoff, counted, logged at error, and
named by /readyz meanwhile; the daemon then syncs again without a restart."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from daemon.connectors.contract import PollReport
from daemon.service.app import HOOKS, METRICS, POLLERS, SUPERVISOR
from daemon.simulators.harness import Bridge
from eventstore import RecordedEvent
from projections import kinds


async def _seen_down(bridge: Bridge, task: str) -> list[str]:
    """The supervisor's reasons while ``task`` is down (polled: the window is a second)."""
    supervisor = bridge.app[SUPERVISOR]
    for _ in range(400):
        reasons = supervisor.reasons()
        if any(r.startswith(f"task {task} down (") for r in reasons):
            return reasons
        await asyncio.sleep(0.01)
    raise AssertionError(f"{task} was never seen down")


async def test_outbox_and_poller_faults_are_restarted(bridge: Bridge) -> None:
    app = bridge.app
    registry = app[METRICS].registry
    outbox = bridge.outbox
    real_ready = outbox._ready
    injected = {"outbox": 0, "poller": 0}

    def ready_once_broken() -> list:  # type: ignore[type-arg]
        if not injected["outbox"]:
            injected["outbox"] += 1
            raise RuntimeError("injected outbox fault")
        return real_ready()

    def pass_once_broken(_report: PollReport) -> None:
        if not injected["poller"]:
            injected["poller"] += 1
            raise RuntimeError("injected poller fault")

    with capture_logs() as logs:
        outbox._ready = ready_once_broken  # type: ignore[method-assign]
        app[POLLERS]["soc"].on_pass(pass_once_broken)
        reasons = await _seen_down(bridge, "poller-soc")
        assert "RuntimeError: injected poller fault" in " ".join(reasons)
        cw = await bridge.technician.create_ticket("After a task failure")
        reasons = await _seen_down(bridge, "outbox")
        assert "RuntimeError: injected outbox fault" in " ".join(reasons)

        async def linked() -> bool:
            link = bridge.engine.state.links.get(f"cw:{cw['id']}")
            return link is not None and link.state == "linked"

        await bridge.until(linked, "the ticket to reach the SOC after the outbox came back")
        await bridge.until(
            lambda: asyncio.sleep(0, not app[SUPERVISOR].down), "both tasks running again"
        )
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert {e["task"] for e in failed} == {"outbox", "poller-soc"}
    assert all(e["log_level"] == "error" for e in failed)
    assert {e["task"] for e in logs if e["event"] == "task.restarted"} >= {"outbox", "poller-soc"}
    for task in ("outbox", "poller-soc"):
        sample = registry.get_sample_value("socbridge_task_restarts_total", {"task": task})
        assert sample == 1, task


async def test_sync_and_hook_upkeep_faults_are_restarted(bridge: Bridge) -> None:
    """Sync raising mid-fold starts over from its checkpoint (the half-folded state is
    never saved or decided on), and the ticket still syncs; hook upkeep comes back too."""
    app = bridge.app
    registry = app[METRICS].registry
    injected = {"sync": 0, "hooks": 0}

    def fold_once_broken(event: RecordedEvent) -> None:
        if event.type == kinds.LINK_REQUESTED and not injected["sync"]:
            injected["sync"] += 1
            raise RuntimeError("injected sync fault")

    upkeep = app[HOOKS]
    real_install = upkeep.install_once

    async def install_once_broken() -> None:
        if not injected["hooks"]:
            injected["hooks"] += 1
            raise RuntimeError("injected hooks fault")
        await real_install()

    with capture_logs() as logs:
        bridge.engine.on_event(fold_once_broken)
        cw = await bridge.technician.create_ticket("Sync fails while deciding this one")
        reasons = await _seen_down(bridge, "sync")
        assert "RuntimeError: injected sync fault" in " ".join(reasons)

        async def linked() -> bool:
            link = bridge.engine.state.links.get(f"cw:{cw['id']}")
            return link is not None and link.state == "linked"

        await bridge.until(linked, "the ticket to reach the SOC after sync came back", 30)
        upkeep.installed.clear()
        upkeep.install_once = install_once_broken  # type: ignore[method-assign]
        upkeep.start()
        reasons = await _seen_down(bridge, "hooks")
        assert "RuntimeError: injected hooks fault" in " ".join(reasons)
        await asyncio.wait_for(upkeep.installed.wait(), 30)
    await bridge.settled()
    # One SOC ticket for it: sync decided it again from the checkpoint, not twice.
    marked = [t for t in await bridge.analyst.tickets()
              if t.get("external_id") == f"socbridge:cw:{cw['id']}"]  # fmt: skip
    assert len(marked) == 1
    assert any(e["event"] == "sync.restarted_from_checkpoint" for e in logs)
    for task in ("sync", "hooks"):
        sample = registry.get_sample_value("socbridge_task_restarts_total", {"task": task})
        assert sample == 1, task
