"""The outbox: deliver pending commands in order per ticket, in parallel across tickets.

Pending commands are the outbox projection (``state.outbox``), folded by the
sync engine from ``outbox.command.issued`` and the outcome events. For each
link only the oldest pending command may be in flight, so a ticket's updates
land in the order they were decided; different links proceed in parallel up to
a cap. Fetches (re-reads sync asks for when it cannot order two same-second
observations) take a lane of their own per link: a read orders nothing. Every
attempt ends in an outcome event: delivered (with the created id where there
is one), failed (with the error and when it is retried), or abandoned (a
permanent refusal, the link was unlinked, or too many attempts). Nothing is
delivered before sync has caught up with the log after a start.
Commands of a tenant whose sync is off, or after the integration was removed,
are held, not delivered (R9, R16).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from typing import Any

import structlog

from daemon.connectors.contract import RemoteApiError, RemoteError, RetryAfterTooLongError
from daemon.outbox.deliver import Desks, MissingTargetError, StaleTargetError, deliver
from daemon.outbox.fetch import fetch_notes, fetch_ticket
from daemon.sync.engine import SyncEngine
from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.state import PendingCommand, Side

#: Remote statuses that will not change by retrying: the command is abandoned.
PERMANENT = frozenset({400, 404, 409, 410, 422})


def _lane(command: PendingCommand) -> str:
    """Commands of one lane are carried out one at a time, oldest first: a link's writes
    in the order decided; its fetches (reads, which order nothing) in a lane of their own,
    so a read of one side never waits behind writes held up on the other."""
    return f"{command.link_id}#fetch" if command.is_fetch else command.link_id


def _head_order(command: PendingCommand) -> tuple[bool, int]:
    """A link's create goes first, then its commands as issued: nothing else of the link
    can be delivered before its create (which ``audit --fix`` may send again after
    commands that wait for it)."""
    return (not command.is_create, command.issued_at)


class Outbox:
    """Delivers what sync decided; appends what happened."""

    def __init__(
        self,
        store: EventStore,
        engine: SyncEngine,
        desks: Desks,
        *,
        max_parallel: int = 8,
        max_attempts: int | None = None,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        reobserve: Callable[[Side, int, str | None], None] | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.desks = desks
        self.max_parallel = max_parallel
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        #: Asks intake to read a ticket again: (side, ticket id, tenant).
        self._reobserve = reobserve
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # lane (see _lane) -> task
        self._done: set[str] = set()  # command ids with an outcome not yet folded
        self._retry_at: dict[str, float] = {}  # command id -> monotonic time
        #: command id -> position of its last failed attempt, until sync has folded it:
        #: the next attempt's number comes from the folded state.
        self._unfolded: dict[str, int] = {}
        self._tried: set[str] = set()
        self._log = structlog.get_logger("socbridge.outbox")
        self._stopping = False
        #: lane -> its oldest pending command not done (see _ready), for the state
        #: object in _heads_of; None when it must be computed again.
        self._heads: dict[str, PendingCommand] | None = None
        self._heads_of: object = None
        engine.on_event(self._folded)

    @property
    def depth(self) -> int:
        return len(self.engine.state.outbox)

    def oldest_waiting_s(self, issued_at: Callable[[str], float | None], since: float) -> float:
        """Age of the oldest pending command that should be going out, in seconds (0 when
        none): commands held by a tenant switch or a removal are waiting as asked, not
        stuck. ``issued_at`` gives a command's issue time, when known; ``since`` stands in
        for the others (issued before this process started)."""
        state = self.engine.state
        if state.removed:
            return 0.0
        oldest = None
        for command in state.outbox.values():
            if not self.engine.tenant_enabled(command.tenant):
                continue
            issued = issued_at(command.command_id)
            at = since if issued is None else issued
            oldest = at if oldest is None else min(oldest, at)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def _folded(self, event: RecordedEvent) -> None:
        """Keep the lane heads as sync folds: a new command can only become its lane's
        head; an outcome may end one, and the heads are computed again at the next look.

        Every command sync issues wakes the outbox. Under a storm of changes thousands
        of commands wait behind the API rate caps; finding the heads by walking all of
        them at every wake would cost more than the deliveries, and the time it takes
        on the event loop would hold sync's decisions back.
        """
        if self._heads is None or self._heads_of is not self.engine.state:
            return
        if event.type == kinds.COMMAND_ISSUED:
            command = self.engine.state.outbox.get(event.event_id)
            if command is not None:
                lane = _lane(command)
                head = self._heads.get(lane)
                if head is None or _head_order(command) < _head_order(head):
                    self._heads[lane] = command
        elif event.type in kinds.OUTCOMES:
            self._heads = None

    def _lane_heads(self) -> dict[str, PendingCommand]:
        """Each lane's oldest pending command that has no outcome yet."""
        state = self.engine.state
        if self._heads is not None and self._heads_of is state:
            return self._heads
        heads: dict[str, PendingCommand] = {}
        for command in state.outbox.values():
            if command.command_id in self._done:
                continue
            head = heads.get(_lane(command))
            if head is None or _head_order(command) < _head_order(head):
                heads[_lane(command)] = command
        self._heads, self._heads_of = heads, state
        return heads

    def _ready(self) -> list[PendingCommand]:
        state = self.engine.state
        if state.removed:
            return []
        heads = self._lane_heads()
        now = time.monotonic()
        folded = state.position
        for command_id in [c for c, p in self._unfolded.items() if p <= folded]:
            del self._unfolded[command_id]
        ready = []
        for lane, command in sorted(heads.items(), key=lambda kv: kv[1].issued_at):
            if lane in self._in_flight:
                continue
            if self._retry_at.get(command.command_id, 0) > now:
                continue
            if command.command_id in self._unfolded:
                continue  # a retry before sync folds the failure would reuse its number
            if not self.engine.tenant_enabled(command.tenant):
                continue  # R9: held until the tenant is switched back on
            link = state.links.get(command.link_id)
            if (
                link is not None
                and link.state != "unlinked"
                and not command.is_create
                and link.ticket_id(command.target) is None
            ):
                continue  # waits for the link's create to be delivered and linked
            ready.append(command)
        return ready

    async def run(self) -> None:
        """Deliver until cancelled; in-flight deliveries are awaited on the way out."""
        # Not before sync has folded the log to where it ended at start: while it catches
        # up from its checkpoint (after a crash), commands delivered long ago still look
        # pending, and sending one again would put a stale value back on the remote.
        await self.engine.ready.wait()
        try:
            while True:
                self.engine.changed.clear()
                # Forget outcomes sync has folded (walks the few done ids, not the outbox).
                outbox = self.engine.state.outbox
                self._done = {c for c in self._done if c in outbox}
                for command in self._ready():
                    if len(self._in_flight) >= self.max_parallel:
                        break
                    lane = _lane(command)
                    task = asyncio.create_task(self._attempt(command))
                    self._in_flight[lane] = task
                    task.add_done_callback(functools.partial(self._finished, lane))
                await self._wait()
        finally:
            self._stopping = True
            if self._in_flight:
                await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    def _finished(self, lane: str, _task: object = None) -> None:
        self._in_flight.pop(lane, None)
        self.engine.changed.set()

    async def _wait(self) -> None:
        pending = [
            t
            for cid, t in self._retry_at.items()
            if cid in self.engine.state.outbox and cid not in self._done
        ]
        timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
        try:
            await asyncio.wait_for(self.engine.changed.wait(), timeout)
        except TimeoutError:
            pass

    async def _attempt(self, command: PendingCommand) -> None:
        command_id = command.command_id
        link = self.engine.state.links.get(command.link_id)
        if link is None:
            return
        if link.state == "unlinked":
            await self._outcome(command, kinds.COMMAND_ABANDONED, {"reason": "link was unlinked"})
            return
        attempt = command.attempts + 1
        maybe_sent = (
            command_id in self._tried
            or command.attempts > 0
            or command.issued_at <= self.engine.started_at
        )
        self._tried.add(command_id)
        try:
            if command.is_fetch:
                # A read, not a write: sync could not order two same-second observations.
                result = await fetch_ticket(self.store, command, link, self.desks)
            elif command.action == "fetch_notes":
                # A read: replies made on a created ticket before its link was recorded.
                result = await fetch_notes(self.store, command, link, self.desks)
            else:
                result = await deliver(command, link, self.desks, maybe_sent=maybe_sent)
        except MissingTargetError:
            return  # the link's create is delivered but not linked yet: wait for it
        except StaleTargetError as exc:
            # Someone changed the field meanwhile: overwriting it blindly would
            # lose their change. Re-read the ticket so sync decides with it.
            await self._outcome(
                command,
                kinds.COMMAND_ABANDONED,
                {"reason": f"not overwritten: {exc}", "attempt": attempt, "stale": exc.changed},
            )
            if self._reobserve is not None:
                self._reobserve(exc.target, exc.ticket_id, command.tenant)
            return
        except RemoteApiError as exc:
            if exc.status in PERMANENT:
                await self._outcome(
                    command,
                    kinds.COMMAND_ABANDONED,
                    {
                        "reason": f"refused by the remote: {exc}",
                        "attempt": attempt,
                        "remote_status": str(exc.status),
                    },
                )
            else:
                await self._failed(command, attempt, str(exc), str(exc.status))
            return
        except RetryAfterTooLongError as exc:
            await self._failed(command, attempt, f"{type(exc).__name__}: {exc}", "429")
            return
        except (RemoteError, OSError, TimeoutError) as exc:
            await self._failed(command, attempt, f"{type(exc).__name__}: {exc}", "network")
            return
        self._retry_at.pop(command_id, None)
        await self._outcome(
            command, kinds.COMMAND_DELIVERED, {"result": result, "attempt": attempt}
        )

    async def _failed(
        self, command: PendingCommand, attempt: int, error: str, remote_status: str
    ) -> None:
        """A delivery attempt the remote failed; ``remote_status`` is its HTTP
        status, or ``network`` when no answer came (what /metrics counts by)."""
        # Transient (network, 5xx, 429, auth until the keys are fixed): retried for as long as
        # it takes, at most max_delay_s apart. A cap is for tests and tools only.
        if self.max_attempts is not None and attempt >= self.max_attempts:
            await self._outcome(
                command,
                kinds.COMMAND_ABANDONED,
                {
                    "reason": f"gave up after {attempt} attempts: {error}",
                    "attempt": attempt,
                    "remote_status": remote_status,
                },
            )
            return
        # The exponent is capped: 2.0 ** attempt overflows a float after ~1000 attempts.
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt - 1, 40))
        delay *= 0.5 + random.random() / 2  # jitter, so a recovered remote is not stampeded
        self._retry_at[command.command_id] = time.monotonic() + delay
        await self._outcome(
            command,
            kinds.COMMAND_FAILED,
            {
                "attempt": attempt,
                "error": error,
                "retry_in_s": round(delay, 3),
                "remote_status": remote_status,
            },
            suffix=str(attempt),
        )

    async def _outcome(
        self, command: PendingCommand, type_: str, data: dict[str, Any], suffix: str = ""
    ) -> None:
        command_id = command.command_id
        event = NewEvent(
            stream=f"outbox:{command.link_id}",
            type=type_,
            data={
                "command_id": command_id,
                "kind": command.kind,
                "link_id": command.link_id,
                **data,
            },
            tenant=command.tenant,
            ticket=command.link_id,
            event_id=derived_event_id("outbox", command_id, type_, suffix),
            causation_id=command_id,
            correlation_id=command.link_id,
            source=kinds.OUTBOX_SOURCE,
        )
        [recorded] = await self.store.append([event])
        if type_ != kinds.COMMAND_FAILED:
            self._done.add(command_id)
            self._heads = None  # its lane's next command is the head now
        elif recorded.position > self.engine.state.position:
            self._unfolded[command_id] = recorded.position
        self._log.info(
            type_, command_id=command_id, kind=command.kind, link=command.link_id,
            tenant=command.tenant,
        )  # fmt: skip
