"""Building real logs for the replay and audit tests: a live engine over a real SQLite file.

Observations and outcomes are appended the way intake and the outbox append
them; the sync engine decides on them as it does in the daemon, so the logs
hold real decisions. Hand-written outcomes (failed, abandoned, delivered
without a result) seed the states the audit must find.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from daemon.sync.decide import decide
from daemon.sync.engine import MAX_BATCH, SyncEngine
from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.state import PendingCommand
from tests.support.rules import CW_PRIORITIES, RULES


def cw_seen(ident: int, at: str, *, status: str = "Send to SOC", priority: str = "normal",
            own_write: bool = False) -> NewEvent:  # fmt: skip
    data = {"id": ident, "summary": f"t{ident}", "status": status,
            "priority": CW_PRIORITIES[priority], "board": "SOC Incidents", "company_id": 250,
            "own_write": own_write, "external_ref": None, "updated_at": at}  # fmt: skip
    return NewEvent(f"cw:ticket:{ident}", kinds.CW_TICKET_OBSERVED, data, tenant="acme",
                    ticket=f"cw:{ident}", source="connectwise", occurred_at=at)  # fmt: skip


def soc_seen(ident: int, at: str, *, status: str = "open", priority: str = "normal") -> NewEvent:
    data = {"id": ident, "subject": f"s{ident}", "status": status, "priority": priority,
            "organization_id": 9001, "external_id": "socbridge:cw:1", "updated_at": at}  # fmt: skip
    return NewEvent(f"soc:ticket:{ident}", kinds.SOC_TICKET_OBSERVED, data, tenant="acme",
                    ticket=f"soc:{ident}", source="soc", occurred_at=at)  # fmt: skip


def outcome(command: PendingCommand, type_: str, **data: Any) -> NewEvent:
    suffix = type_.rsplit(".", 1)[1] + str(data.get("attempt", ""))
    return NewEvent(
        f"outbox:{command.link_id}", type_,
        {"command_id": command.command_id, "kind": command.kind,
         "link_id": command.link_id, **data},
        tenant="acme", ticket=command.link_id,
        event_id=derived_event_id("outbox", command.command_id, suffix),
        causation_id=command.command_id, source=kinds.OUTBOX_SOURCE,
    )  # fmt: skip


class Log:
    """A real event log with a live engine deciding on what is appended."""

    def __init__(self, store: EventStore, live: Live) -> None:
        self.store, self.live = store, live

    @classmethod
    async def open(cls, path: Path, *, max_batch: int = MAX_BATCH) -> Log:
        store = await EventStore.open(path, synchronous="NORMAL")
        live = Live(store, max_batch=max_batch)
        await live.start()
        return cls(store, live)

    async def close(self) -> None:
        await self.live.stop()
        await self.store.close()

    @property
    def outbox(self) -> list[PendingCommand]:
        assert self.live.engine is not None
        return sorted(self.live.engine.state.outbox.values(), key=lambda c: c.issued_at)

    def command(self, kind: str) -> PendingCommand:
        return next(c for c in self.outbox if c.kind == kind)

    async def add(self, *events: NewEvent) -> None:
        for event in events:
            await self.store.append([event])
            await self.live.settle()

    async def deliver(self, kind: str, result: dict[str, Any] | None = None) -> None:
        await self.deliver_command(self.command(kind), result)

    async def deliver_command(
        self, command: PendingCommand, result: dict[str, Any] | None = None
    ) -> None:
        await self.add(outcome(command, kinds.COMMAND_DELIVERED, result=result or {}, attempt=1))

    async def restart(self) -> None:
        """Stop the engine (it saves its checkpoint), start a new one from it (a restart)."""
        await self.live.settle()
        await self.live.stop()
        await self.live.start()

    async def linked(self) -> None:
        """cw:1 routed and its SOC ticket 11 created: a linked pair, both at normal/open."""
        await self.add(cw_seen(1, "2026-11-29T10:00:00Z"))
        await self.deliver("soc.create_ticket", {"id": 11})

    async def events(self) -> list[RecordedEvent]:
        return [e async for e in self.store.read()]

    async def conflict(self) -> None:
        """The SOC raises priority; before it lands, a technician lowers it in ConnectWise."""
        await self.linked()
        await self.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="urgent"))
        await self.add(cw_seen(1, "2026-11-29T10:02:00Z", priority="low"))


class Live:
    def __init__(self, store: EventStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self.engine: SyncEngine | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> SyncEngine:
        self.engine = SyncEngine(
            self.store, RULES, checkpoint_every=3, checkpoint_idle_s=3600, max_batch=self.max_batch
        )
        await self.engine.load()
        self.task = asyncio.create_task(self.engine.run())
        return self.engine

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def settle(self) -> None:
        assert self.engine is not None
        await asyncio.wait_for(self.engine.drain(), 30)


PRIORITIES = ["urgent", "high", "normal", "low"]


def deciding(**policy: str) -> Any:
    rules = RULES.with_policy(**policy)
    return lambda state, event: decide(state, event, rules)


STATUSES = {"cw": ["In Progress", "Solved", "Unresolved"], "soc": ["open", "pending", "solved"]}


edits = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["cw", "soc"]), st.sampled_from(["status", "priority"]),
                  st.integers(0, 3), st.booleans()),
        st.tuples(st.just("deliver"), st.none(), st.integers(0, 3), st.none()),
        st.tuples(st.just("restart"), st.none(), st.none(), st.none()),
    ),
    min_size=1, max_size=20,
)  # fmt: skip


async def edited(path: Path, ops: list[tuple[Any, ...]]) -> list[RecordedEvent]:
    """One linked pair; both sides edit it while the bridge's writes are still in flight."""
    log = await Log.open(path)
    await log.linked()
    for n, (kind, name, pick, own) in enumerate(ops):
        at = f"2026-11-29T11:{n // 60:02d}:{n % 60:02d}Z"
        if kind == "deliver":
            if log.outbox:
                command = log.outbox[pick % len(log.outbox)]
                await log.deliver_command(command)
        elif kind == "restart":
            await log.restart()
        elif kind == "cw":
            status = STATUSES["cw"][pick % 3] if name == "status" else "In Progress"
            priority = PRIORITIES[pick] if name == "priority" else "normal"
            await log.add(cw_seen(1, at, status=status, priority=priority, own_write=own))
        else:
            status = STATUSES["soc"][pick % 3] if name == "status" else "open"
            priority = PRIORITIES[pick] if name == "priority" else "normal"
            await log.add(soc_seen(11, at, status=status, priority=priority))
    events = await log.events()
    await log.close()
    return events


async def carried_history(path: Path) -> list[RecordedEvent]:
    """A priority conflict (the SOC wins by policy), its writes delivered and echoed; then a
    later SOC change, decided on the state that conflict left."""
    log = await Log.open(path)
    await log.conflict()
    for command in list(log.outbox):
        await log.deliver_command(command)
    await log.add(cw_seen(1, "2026-11-29T10:03:00Z", priority="urgent", own_write=True))
    await log.add(soc_seen(11, "2026-11-29T10:04:00Z", priority="high"))
    for command in list(log.outbox):
        await log.deliver_command(command)
    events = await log.events()
    await log.close()
    return events
