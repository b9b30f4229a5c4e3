"""The outbox: deliver pending commands in order per ticket, in parallel across tickets.

Pending commands are the outbox projection (``state.outbox``), folded by the
sync engine from ``outbox.command.issued`` and the outcome events. For each
link only the oldest pending command may be in flight, so a ticket's updates
land in the order they were decided; different links proceed in parallel up to
a cap. Fetches (re-reads sync asks for when it cannot order two same-second
observations) take a lane of their own per link: a read orders nothing. The
fetches of one desk ready at once read their tickets together, with one request
(see ``daemon/outbox/fetch.py``); fetches that become ready while a desk's read is
under way wait for it, and go together after it. Every attempt ends in an
outcome event: delivered (with the created id where there is one), failed (a
transient fault: network, 5xx, 429, a conflicting update; retried with capped
backoff for as long as it takes), parked (a definitive refusal: validation,
permission, not found; it waits, and its lane with it, until an operator
retries or skips it), superseded (never sent: a later command of its lane
writes the same fields, or reads the same ticket, so only the latest value of a
burst is written), or abandoned (the link was unlinked, or a test's attempt
cap). Nothing is delivered before sync has caught up with
the log after a start.
Commands of a tenant whose sync is off, or after the integration was removed,
are held, not delivered (R9, R16).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.connectors.contract import RemoteApiError, RemoteError, RetryAfterTooLongError
from daemon.connectors.remote import request_purpose
from daemon.outbox.deliver import Desks, MissingTargetError, StaleTargetError, deliver
from daemon.outbox.fetch import Fetch, fetch_notes, fetch_ticket, fetch_tickets
from daemon.sync.engine import SyncEngine
from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.state import Link, PendingCommand, Side

SIDES: tuple[Side, ...] = ("cw", "soc")

#: Remote statuses that retrying will not change: the command is parked for an operator.
#: 401 is not among them: wrong keys fail every command alike, and fixing them (which
#: readiness reports) lets every retry through; 409 parks only where it is no race.
DEFINITIVE = frozenset({400, 403, 404, 409, 410, 422})
#: Events after which a command is never attempted again (the fold drops it).
_ENDS_COMMAND = frozenset({kinds.COMMAND_DELIVERED, kinds.COMMAND_ABANDONED, kinds.COMMAND_SKIPPED})


def definitive(command: PendingCommand, status: int) -> bool:
    """Whether the remote's refusal will stand however often the command is sent.

    A 409 on an update is the remote's optimistic lock losing a race with another
    writer: the next attempt reads the ticket again, so it is transient.
    """
    if status == 409 and command.is_update:
        return False
    return status in DEFINITIVE


def _lane(command: PendingCommand) -> str:
    return command.lane


def _batches(ready: list[PendingCommand]) -> list[list[PendingCommand]]:
    """What to start, in ``ready``'s order: each command on its own, except the fetches of
    one desk, which go together (reading many tickets costs one request, as one does)."""
    batches: list[list[PendingCommand]] = []
    fetches: dict[Side, list[PendingCommand]] = {}
    for command in ready:
        if not command.is_fetch:
            batches.append([command])
        elif command.target in fetches:
            fetches[command.target].append(command)
        else:
            fetches[command.target] = [command]
            batches.append(fetches[command.target])
    return batches


@dataclass(frozen=True, slots=True)
class _Attempt:
    """A command going out: its link as it is now, the attempt's number, and whether an
    earlier attempt may have landed."""

    command: PendingCommand
    link: Link
    number: int
    maybe_sent: bool


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
        max_parallel: int = 8,  # per desk
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
        #: lane (see _lane) -> its task; the fetches read together share one.
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        #: Desks a fetch task is reading from: their other fetches wait, then go together.
        self._fetching: set[Side] = set()
        #: Tasks under way per desk: ``max_parallel`` is per desk, so commands waiting for
        #: one desk's rate limit never hold the other desk's back.
        self._running: dict[Side, set[asyncio.Task[None]]] = {"cw": set(), "soc": set()}
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

    @property
    def parked(self) -> int:
        return len(self.engine.state.parked())

    def oldest_waiting_s(self, issued_at: Callable[[str], float | None], since: float) -> float:
        """Age of the oldest pending command that should be going out, in seconds (0 when
        none): commands held by a tenant switch or a removal are waiting as asked, not
        stuck. ``issued_at`` gives a command's issue time, when known; ``since`` stands in
        for the others (issued before this process started)."""
        return max(self.oldest_waiting_by_side(issued_at, since).values())

    def oldest_waiting_by_side(
        self, issued_at: Callable[[str], float | None], since: float
    ) -> dict[Side, float]:
        """:meth:`oldest_waiting_s` for each desk the commands go to (both always present)."""
        state = self.engine.state
        oldest: dict[Side, float] = {}
        if not state.removed:
            # Parked commands, and their lanes, wait for an operator: counted by the parked
            # gauge and listed by the audit, not a sign that delivery is stuck.
            held = {_lane(c) for c in state.parked()}
            for command in state.outbox.values():
                if not self.engine.tenant_enabled(command.tenant) or _lane(command) in held:
                    continue
                issued = issued_at(command.command_id)
                at = since if issued is None else issued
                side = command.target
                oldest[side] = min(oldest.get(side, at), at)
        now = time.time()
        return {side: max(0.0, now - oldest[side]) if side in oldest else 0.0 for side in SIDES}

    def _folded(self, event: RecordedEvent) -> None:
        """Keep the lane heads as sync folds: a new command can only become its lane's
        head; an outcome may end one, and the heads are computed again at the next look.

        Every command sync issues wakes the outbox. Under a storm of changes thousands
        of commands wait behind the API rate caps; finding the heads by walking all of
        them at every wake would cost more than the deliveries, and the time it takes
        on the event loop would hold sync's decisions back.
        """
        if event.type == kinds.COMMAND_RETRIED:
            self._retry_at.pop(event.data["command_id"], None)  # asked for now
        elif event.type in _ENDS_COMMAND:
            # Out of the outbox for good: what this process remembered of it goes too, or
            # every command ever delivered would stay in these for the life of the process.
            self._tried.discard(event.data["command_id"])
            self._retry_at.pop(event.data["command_id"], None)
        if self._heads is None or self._heads_of is not self.engine.state:
            return
        if event.type == kinds.COMMAND_ISSUED:
            command = self.engine.state.outbox.get(event.event_id)
            if command is not None:
                lane = _lane(command)
                head = self._heads.get(lane)
                if head is None or _head_order(command) < _head_order(head):
                    self._heads[lane] = command
        elif event.type in kinds.OUTCOMES or event.type == kinds.COMMAND_SKIPPED:
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
        if state.removed or not self.engine.ready.is_set():
            return []  # (not ready: sync folds the log again after a restart of its own)
        heads = self._lane_heads()
        now = time.monotonic()
        folded = state.position
        durable = self.engine.durable_position
        for command_id in [c for c, p in self._unfolded.items() if p <= folded]:
            del self._unfolded[command_id]
        ready = []
        for lane, command in sorted(heads.items(), key=lambda kv: kv[1].issued_at):
            if lane in self._in_flight:
                continue
            if command.is_fetch and command.target in self._fetching:
                continue  # goes with the desk's next read, with the others that wait
            if command.issued_at > durable:
                continue  # sync folded it ahead of its commit (see SyncEngine._decide_batch)
            if self._retry_at.get(command.command_id, 0) > now:
                continue
            if command.command_id in self._unfolded:
                continue  # a retry before sync folds the failure would reuse its number
            if command.parked is not None:
                continue  # and its lane with it, until an operator retries or skips it
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
                for batch in _batches(self._ready()):
                    if len(self._running[batch[0].target]) < self.max_parallel:
                        self._start(batch)
                await self._wait()
        finally:
            self._stopping = True
            if self._in_flight:
                await asyncio.gather(*set(self._in_flight.values()), return_exceptions=True)

    def _start(self, batch: list[PendingCommand]) -> None:
        """One task for a command, or for the fetches of one desk (see :func:`_batches`)."""
        first = batch[0]
        if first.is_fetch:
            task = asyncio.create_task(self._fetches(batch))
            self._fetching.add(first.target)
            task.add_done_callback(lambda _: self._fetching.discard(first.target))
        else:
            task = asyncio.create_task(self._attempt(first))
        running = self._running[first.target]
        running.add(task)
        task.add_done_callback(running.discard)
        for command in batch:
            lane = _lane(command)
            self._in_flight[lane] = task
            task.add_done_callback(functools.partial(self._finished, lane))

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
        attempt = await self._going(command)
        if attempt is not None:
            await self._carry_out(attempt)

    async def _fetches(self, commands: list[PendingCommand]) -> None:
        """Fetches of one desk, at the heads of their lanes at once, carried out together
        (see :func:`fetch_tickets`: one request reads all their tickets), each then ended
        as its own attempt would be."""
        if len(commands) == 1:
            return await self._attempt(commands[0])
        side = commands[0].target
        going = [a for c in commands if (a := await self._going(c)) is not None]
        together: dict[str, Fetch] = {}
        for a in going:
            ticket_id = a.link.ticket_id(side)
            if ticket_id is not None:  # else _carry_out waits for the link's create
                together[a.command.command_id] = Fetch(a.command, ticket_id)
        failed: RemoteError | OSError | TimeoutError | None = None
        try:
            with request_purpose("fetch"):
                await fetch_tickets(self.store, self.desks[side], list(together.values()))
        except (RemoteError, OSError, TimeoutError) as exc:
            failed = exc
        # Refused as a read of many, which says nothing of any one ticket: read each alone.
        refused = isinstance(failed, RemoteApiError) and failed.status in DEFINITIVE
        alone = []
        for a in going:
            fetch = together.get(a.command.command_id)
            if fetch is not None and fetch.recorded is not None:
                await self._delivered(a, fetch.recorded)
            elif fetch is not None and failed is not None and not refused:
                await self._unsent(a, failed)  # what its own read would have met
            else:
                alone.append(a)  # e.g. its ticket missing from the answer: a 404 parks it
        await asyncio.gather(*(self._carry_out(a) for a in alone))

    async def _going(self, command: PendingCommand) -> _Attempt | None:
        """The attempt at ``command``, or ``None`` when it ends (or waits) unsent: its link
        is gone or unlinked, or a later command of its lane supersedes it.

        An update first waits until its desk's rate limit has room, and only then looks
        for a successor: queued behind the limit for seconds in a burst, it would
        otherwise write a value overwritten meanwhile.
        """
        if command.is_update:
            await self.desks[command.target].room()
            current = self.engine.state.outbox.get(command.command_id)
            if current is None:
                return None  # ended meanwhile (an operator skipped it)
            command = current
        command_id = command.command_id
        link = self.engine.state.links.get(command.link_id)
        if link is None:
            return None
        if link.state == "unlinked":
            await self._outcome(command, kinds.COMMAND_ABANDONED, {"reason": "link was unlinked"})
            return None
        maybe_sent = (
            command_id in self._tried
            or command.attempts > 0
            or command.issued_at <= self.engine.started_at
        )
        if not maybe_sent and command.settled is None:
            successor = self._successor(command)
            if successor is not None:
                await self._outcome(command, kinds.COMMAND_SUPERSEDED,
                                    {"successor": successor.command_id})  # fmt: skip
                return None
        self._tried.add(command_id)
        return _Attempt(command, link, command.attempts + 1, maybe_sent)

    async def _carry_out(self, attempt: _Attempt) -> None:
        """Send the command, and record what came of it."""
        command, link = attempt.command, attempt.link
        try:
            if command.is_fetch:
                # A read, not a write: sync could not order two same-second observations.
                with request_purpose("fetch"):
                    result = await fetch_ticket(self.store, command, link, self.desks)
            elif command.action == "fetch_notes":
                # A read: replies made on a created ticket before its link was recorded.
                with request_purpose("fetch"):
                    result = await fetch_notes(self.store, command, link, self.desks)
            else:
                with request_purpose("write"):
                    result = await deliver(command, link, self.desks, maybe_sent=attempt.maybe_sent)
        except MissingTargetError:
            return  # the link's create is delivered but not linked yet: wait for it
        except StaleTargetError as exc:
            # Someone changed the field meanwhile: overwriting it blindly would
            # lose their change. Re-read the ticket so sync decides with it.
            await self._outcome(
                command,
                kinds.COMMAND_ABANDONED,
                {"reason": f"not overwritten: {exc}", "attempt": attempt.number,
                 "stale": exc.changed},
            )  # fmt: skip
            if self._reobserve is not None:
                self._reobserve(exc.target, exc.ticket_id, command.tenant)
            return
        except (RemoteError, OSError, TimeoutError) as exc:
            await self._unsent(attempt, exc)
            return
        await self._delivered(attempt, result)

    async def _delivered(self, attempt: _Attempt, result: dict[str, Any]) -> None:
        self._retry_at.pop(attempt.command.command_id, None)
        await self._outcome(
            attempt.command, kinds.COMMAND_DELIVERED, {"result": result, "attempt": attempt.number}
        )

    async def _unsent(self, attempt: _Attempt, exc: RemoteError | OSError | TimeoutError) -> None:
        """An attempt the remote (or the way to it) failed: parked when the remote refused
        it for good, else failed, to be retried."""
        command, number = attempt.command, attempt.number
        if isinstance(exc, RemoteApiError):
            if definitive(command, exc.status):
                await self._park(command, number, exc)
            else:
                await self._failed(command, number, str(exc), str(exc.status))
        elif isinstance(exc, RetryAfterTooLongError):
            await self._failed(command, number, f"{type(exc).__name__}: {exc}", "429")
        else:
            await self._failed(command, number, f"{type(exc).__name__}: {exc}", "network")

    def _successor(self, command: PendingCommand) -> PendingCommand | None:
        """The next pending command of the lane that does all ``command`` would: a later
        update writing (at least) the same fields, or a later read of the same ticket.

        Sending ``command`` first would spend API calls on a value the desk holds for
        an instant (a burst of changes, or a queue that built up behind the rate caps),
        so it is superseded instead: only the latest value is written, in the lane's
        order. Notes, creates and anything that may have been sent already never are.
        """
        if command.is_update:
            fields = set(command.field_writes())
        elif not command.is_fetch:
            return None
        best: PendingCommand | None = None
        for other in self.engine.state.outbox.values():
            if (
                other.kind != command.kind
                or other.link_id != command.link_id
                or other.issued_at <= command.issued_at
                or other.issued_at > self.engine.durable_position
                or (best is not None and other.issued_at >= best.issued_at)
            ):
                continue
            if command.is_update and not fields <= set(other.field_writes()):
                continue
            best = other
        return best

    async def _park(self, command: PendingCommand, attempt: int, exc: RemoteApiError) -> None:
        self._retry_at.pop(command.command_id, None)
        reason = f"refused by the remote: {exc}"
        await self._outcome(
            command,
            kinds.COMMAND_PARKED,
            {"reason": reason, "attempt": attempt, "remote_status": str(exc.status)},
            suffix=str(attempt),
        )
        self._log.error(
            "outbox.command.parked", command_id=command.command_id, kind=command.kind,
            link=command.link_id, tenant=command.tenant, remote_status=exc.status,
            reason=reason,
            fix="socbridge retry COMMAND_ID once the cause is fixed, or socbridge skip COMMAND_ID",
        )  # fmt: skip

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
        if type_ not in (kinds.COMMAND_FAILED, kinds.COMMAND_PARKED):
            self._done.add(command_id)
            self._heads = None  # its lane's next command is the head now
        elif recorded.position > self.engine.state.position:
            self._unfolded[command_id] = recorded.position
        if type_ == kinds.COMMAND_PARKED:
            return  # logged at error by _park, with the reason
        log = self._log.debug if type_ == kinds.COMMAND_SUPERSEDED else self._log.info
        log(
            type_, command_id=command_id, kind=command.kind, link=command.link_id,
            tenant=command.tenant,
        )  # fmt: skip
