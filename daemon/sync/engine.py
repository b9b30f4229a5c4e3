"""The sync loop: fold every event in log order, decide on inputs, append the decisions.

The engine follows the log from the projection checkpoint. Every event is
folded into the bridge state in log order, so the state is exactly what a
rebuild from position 0 gives. Inputs (observations and delivered creates)
are decided against that state; when an input's decisions are appended, the
next inputs wait until those decisions have come round in the log and been
folded, so no decision is ever made on a state that misses an earlier one
(a duplicated callback cannot create a second ticket).

An input is decided on exactly the log before its decisions: they are
appended only if the log still ends where the engine has folded it
(``expected_position``). When something else was appended meanwhile (a
delivery, a callback), the engine folds that first and decides the input
again, so a decision never lands after an event it did not see (an echo
decided before a delivery and folded after it would undo what the delivery
told).

Under a burst many inputs wait at once. They are decided in one go
(:meth:`SyncEngine._decide_batch`): at the log's end, with the store's other
appends held, each input is decided in order and its decisions are folded
right away at the positions they will take, so the next input sees them, just
as if it had waited for them to come round; all their decisions then go into
one group commit. A batch decides exactly what deciding one by one does (see
``tests/daemon/sync/test_batch_property.py``). Until that commit lands, the
outbox sees no command past :attr:`SyncEngine.durable_position`; if it fails,
the folded state is not the log's, and sync starts over from its checkpoint.

Decisions have ids derived from their cause, so after a crash the inputs past
the checkpoint are decided again into the very same events, which the store
then writes only once. The checkpoint is saved only when nothing is waiting,
so it never sits in the middle of a cause and its decisions.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import orjson
import structlog

from daemon.sync.decide import decide
from daemon.sync.rules import Rules
from eventstore import DuplicateEventError, EventStore, LogMovedError, NewEvent, RecordedEvent
from eventstore.chain import encode_data
from projections import kinds
from projections.fold import apply
from projections.persist import ProjectionStore
from projections.state import BridgeState

INPUTS = kinds.OBSERVATIONS | {kinds.COMMAND_DELIVERED}

#: Inputs decided into one commit at most: deciding takes well under a millisecond each,
#: and the store's other appends wait meanwhile (it holds them, see append_at_end).
MAX_BATCH = 256


class SyncEngine:
    """Folds the log into :attr:`state` and appends the decisions inputs imply."""

    def __init__(
        self,
        store: EventStore,
        rules: Rules,
        *,
        checkpoint_every: int = 500,
        checkpoint_idle_s: float = 1.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.store = store
        self.rules = rules
        self.projections = ProjectionStore(store)
        self.state = BridgeState()
        self.checkpoint_every = checkpoint_every
        self.checkpoint_idle_s = checkpoint_idle_s
        #: 1 decides every input on its own, its decisions folded as they come round.
        self.max_batch = max_batch
        self._folded_ahead: int | None = None  # log end before decisions folded ahead
        #: Set whenever the state changes; the outbox waits on it.
        self.changed = asyncio.Event()
        self._listeners: list[Callable[[RecordedEvent], None]] = []
        self._drains: list[asyncio.Event] = []  # drain() callers, woken after each step
        self._log = structlog.get_logger("socbridge.sync")
        self._pending_own: set[str] = set()
        self._deferred: deque[RecordedEvent] = deque()
        self._unsaved = 0
        self._deciding = False
        #: Decisions not appended because the log moved on first (decided again).
        self.raced = 0
        #: Appends of decisions, and the inputs whose decisions they carried (the burst
        #: benchmark's inputs per commit).
        self.commits = 0
        self.inputs_decided = 0
        self._last_step = 0.0  # loop time the last event was folded
        self.started_at = 0
        self.ready = asyncio.Event()
        self._failed = False  # run() raised: the next run starts over from the checkpoint

    def on_event(self, listener: Callable[[RecordedEvent], None]) -> None:
        """Call ``listener`` with every event after it is folded (tests, metrics, demo)."""
        self._listeners.append(listener)

    async def load(self) -> None:
        """Load the saved projection; folding resumes after its checkpoint."""
        self.state = await self.projections.load()
        self.started_at = await self.store.last_position()

    @property
    def durable_position(self) -> int:
        """The folded position known to be in the log: what the outbox may act on.

        While a batch's decisions are folded ahead of their commit, the state holds
        commands that are not durable yet (and never will be if the commit fails).
        """
        return self.state.position if self._folded_ahead is None else self._folded_ahead

    @property
    def quiescent(self) -> bool:
        return not self._deferred and not self._pending_own and not self._deciding

    async def run(self) -> None:
        """Follow the log until cancelled; save a checkpoint on the way out.

        Run again after it raised (under the supervisor), it starts over from the saved
        checkpoint: the state an exception left may be half folded, and nothing of it is
        saved or decided on.
        """
        if self._failed:
            await self._reset()
        saver = asyncio.create_task(self._save_when_idle(), name="sync-checkpoint")
        if self.state.position >= self.started_at:
            # The checkpoint is at the end of the log: caught up already, even if no
            # further event ever arrives (an idle restart must still become ready).
            self._caught_up()
        stopped = False
        try:
            async for event in self.store.subscribe(self.state.position + 1):
                if event.position > self.state.position:  # else folded while deciding
                    await self._step(event)
                if not self.ready.is_set() and event.position >= self.started_at:
                    self._caught_up()
        except asyncio.CancelledError:
            stopped = True
            raise
        except BaseException:
            self._failed = True
            raise
        finally:
            saver.cancel()
            if stopped and self.quiescent and self._unsaved and not self._failed:
                await self.projections.save(self.state, when=lambda: self.quiescent)

    def _caught_up(self) -> None:
        self.ready.set()
        self.changed.set()  # the outbox holds its deliveries until then

    async def _reset(self) -> None:
        """Forget what a failed run left and load the checkpoint; the outbox waits until
        the log is folded again (its state would show delivered commands as pending)."""
        self.ready.clear()
        self._deferred.clear()
        self._pending_own.clear()
        self._deciding = False
        self._unsaved = 0
        await self.load()
        self._failed = False
        self._log.warning("sync.restarted_from_checkpoint", position=self.state.position,
                          log_end=self.started_at)  # fmt: skip

    async def drain(self) -> None:
        """Return once every event in the log is folded and decided, nothing pending.

        For a clean stop, once nothing else appends (intake and outbox stopped):
        the checkpoint :meth:`run` saves on the way out is then at the log's end,
        not before the last cause, which a restart would fold and decide again.
        """
        folded = asyncio.Event()

        def wake(_event: RecordedEvent) -> None:
            folded.set()

        self._listeners.append(wake)
        self._drains.append(folded)
        try:
            while True:
                folded.clear()
                if self.quiescent and self.state.position >= await self.store.last_position():
                    return
                # A step that folds and finds nothing to decide is quiescent again before
                # this task runs; one that decides folds its decisions next.
                await folded.wait()
        finally:
            self._listeners.remove(wake)
            self._drains.remove(folded)

    async def _step(self, event: RecordedEvent) -> None:
        self._fold(event)
        self._deciding = True
        try:
            while self._deferred and not self._pending_own:
                head = self._deferred[0]
                if self.max_batch > 1 and head.position > self.started_at:
                    if not decide(self.state, head, self.rules):
                        self._deferred.popleft()  # nothing to append (as in _decide)
                        continue
                    if not await self._decide_batch():
                        break  # the log is not readable up to its end yet
                    continue
                if not await self._decide(head):
                    break  # the log moved on: fold what came, then decide again
                self._deferred.popleft()
        finally:
            self._deciding = False
            for waiter in self._drains:
                waiter.set()  # a batch may end having appended nothing to fold
        if self.quiescent and self._unsaved >= self.checkpoint_every:
            await self.save()

    def _fold(self, event: RecordedEvent, *, notify: bool = True) -> None:
        """Fold one event and tell the listeners (in log order; for decisions folded
        ahead of their commit, ``notify=False``, :meth:`_notify` once it landed)."""
        self._last_step = asyncio.get_running_loop().time()
        apply(self.state, event)
        self._pending_own.discard(event.event_id)
        self._unsaved += 1
        if event.type in INPUTS:
            self._deferred.append(event)
        if notify:
            self._notify(event)

    def _notify(self, event: RecordedEvent) -> None:
        if event.type in kinds.OUTCOMES or event.type == kinds.COMMAND_ISSUED:
            self.changed.set()
        elif event.type in (kinds.LINKED, kinds.UNLINKED) or event.type.startswith("admin."):
            self.changed.set()
        for listener in self._listeners:
            listener(event)

    async def _decide(self, event: RecordedEvent) -> bool:
        """Decide ``event``; ``False`` when the log moved on before its decisions were
        appended (nothing was written: it is decided again once the rest is folded)."""
        decisions = decide(self.state, event, self.rules)
        if not decisions:
            return True
        if event.position > self.started_at and self.store.appended_through > self.state.position:
            # Known without a write: the log moved on (an append through this store). (An
            # input from before the start may have its decisions logged already: that
            # append is tried, and returns them.)
            self.raced += 1
            return await self._decide_at_end(event)
        try:
            recorded = await self.store.append(decisions, expected_position=self.state.position)
        except LogMovedError:
            self.raced += 1
            if event.position <= self.started_at:
                return False
            return await self._decide_at_end(event)
        except DuplicateEventError as exc:
            recorded = await self._logged_instead(event, decisions, exc)
        self._committed()
        self._wait_for(recorded)
        return True

    async def _decide_batch(self) -> bool:
        """Decide the waiting inputs in order (at most :attr:`max_batch`) at the log's end
        and append all their decisions in one commit; ``False`` if the log could not be
        read up to its end (nothing decided).

        Each input's decisions are folded before the next input is decided, at the
        positions the commit gives them (nothing else can land in between: the store
        holds its other appends), so every input is decided on exactly the log before
        its decisions, as :meth:`_decide` does one at a time. Folded ahead, they cannot
        be taken back: if the commit fails, this run ends and the next starts over from
        the checkpoint (see :meth:`run`).
        """
        ahead: list[RecordedEvent] = []
        inputs = 0  # taken off the queue
        deciding = 0  # of them, those with decisions (the commit's inputs)
        reached = False

        async def at_end(end: int) -> list[NewEvent]:
            nonlocal inputs, deciding, reached
            if not await self._fold_to(end):
                return []
            reached = True
            self._folded_ahead = end
            decisions: list[NewEvent] = []
            while self._deferred and inputs < self.max_batch:
                event = self._deferred[0]
                if event.position <= self.started_at:
                    break  # its decisions may be logged already: decided on its own
                self._deferred.popleft()
                inputs += 1
                made = decide(self.state, event, self.rules)
                deciding += bool(made)
                for decision in made:
                    recorded = _as_recorded(decision, end + len(ahead) + 1)
                    self._fold(recorded, notify=False)
                    ahead.append(recorded)
                    decisions.append(decision)
            return decisions

        try:
            recorded = await self.store.append_at_end(at_end)
            if [(r.position, r.event_id) for r in recorded] != [
                (r.position, r.event_id) for r in ahead
            ]:
                landed = recorded[0].position - 1 if recorded else -1
                raise LogMovedError(ahead[0].position - 1, landed)
        except BaseException as exc:
            if inputs:
                self._failed = True  # the state holds decisions the log may not
                if isinstance(exc, LogMovedError):
                    self._log.warning("sync.batch_not_appended", error=str(exc))
            raise
        finally:
            self._folded_ahead = None
        if not reached:
            return False
        if recorded:
            self._committed(deciding)
        for event in recorded:
            self._notify(event)
        return True

    async def _fold_to(self, end: int) -> bool:
        """Fold the log up to ``end`` (where a held append found it ending); ``False`` if
        it is not readable that far yet: nothing is to be decided on a state short of it."""
        while self.state.position < end:
            batch = await self.store.read_batch(self.state.position + 1, 1000, until=end)
            if not batch:
                return False
            for folded in batch:
                self._fold(folded)
        return True

    def _committed(self, inputs: int = 1) -> None:
        self.commits += 1
        self.inputs_decided += inputs

    def _wait_for(self, recorded: list[RecordedEvent]) -> None:
        """Hold the next decisions until these are folded (not those folded already:
        decisions re-decided after a crash)."""
        self._pending_own.update(r.event_id for r in recorded if r.position > self.state.position)

    async def _logged_instead(
        self, event: RecordedEvent, decisions: list[NewEvent], exc: DuplicateEventError
    ) -> list[RecordedEvent]:
        """The log already holds other decisions for this cause (the rules changed
        since): the log is the truth, keep it and say so."""
        self._log.warning("sync.decision_differs_from_log", cause=event.event_id, error=str(exc))
        return [r for d in decisions if (r := await self.store.get(d.event_id))]

    async def _decide_at_end(self, event: RecordedEvent) -> bool:
        """Decide ``event`` again with the store's other appends held at the log's end.

        Callbacks keep landing while an input is decided; under a steady stream of
        them a conditional append would find the log moved on nearly every time,
        and the input (with every one queued behind it) would wait until the stream
        paused. Here the store holds its appends, the engine folds up to where the
        log ends, and the decisions go right after that, decided on exactly the
        log before them as always. ``False`` if the log still moved on (another
        process appended, or the hold timed out).
        """
        decisions: list[NewEvent] = []
        reached = False

        async def at_end(end: int) -> list[NewEvent]:
            nonlocal reached
            if not await self._fold_to(end):
                return []
            reached = True
            decisions[:] = decide(self.state, event, self.rules)
            return decisions

        try:
            recorded = await self.store.append_at_end(at_end)
        except LogMovedError:
            self.raced += 1
            return False
        except DuplicateEventError as exc:
            recorded = await self._logged_instead(event, decisions, exc)
        if not reached:
            return False
        self._committed()
        self._wait_for(recorded)
        return True

    async def save(self) -> None:
        """Save the projection rows and checkpoint (only between a cause and its decisions)."""
        if not self.quiescent:
            return
        # The rows are taken when the save starts; events folded while it is being
        # written stay unsaved, or a log that goes quiet right then would never be saved.
        folded = self._unsaved
        # Checked again once an earlier save is done: folding may have gone on meanwhile,
        # and a checkpoint between a cause and its decisions would lose the decisions.
        if await self.projections.save(self.state, when=lambda: self.quiescent) >= 0:
            self._unsaved -= folded

    async def _save_when_idle(self) -> None:
        """Save once no event has been folded for ``checkpoint_idle_s``. While events keep
        coming, ``checkpoint_every`` bounds what a restart folds again: a save is a write
        transaction of its own, and each one makes the appends queued behind it wait."""
        loop = asyncio.get_running_loop()
        while True:
            idle_at = self._last_step + self.checkpoint_idle_s
            if loop.time() < idle_at:
                await asyncio.sleep(idle_at - loop.time())  # an event came meanwhile
                continue
            if self._unsaved and self.quiescent:
                await self.save()
            await asyncio.sleep(self.checkpoint_idle_s)

    def tenant_enabled(self, tenant: str | None) -> bool:
        rule = self.rules.tenants.get(tenant or "")
        if rule is None:
            return False
        return self.state.tenant_switches.get(rule.name, rule.sync_enabled)


def _as_recorded(event: NewEvent, position: int) -> RecordedEvent:
    """A decision as the log will hold it at ``position``, for folding ahead of its commit.

    The data goes through the log's own encoding (sorted keys, JSON types), so the
    fold sees what a rebuild from the log sees. Folding reads no hash or time.
    """
    data = orjson.loads(encode_data(dict(event.data)))
    return RecordedEvent(
        position=position, event_id=event.event_id, stream=event.stream, stream_version=0,
        type=event.type, schema_version=event.schema_version, tenant=event.tenant,
        ticket=event.ticket, causation_id=event.causation_id,
        correlation_id=event.correlation_id, source=event.source,
        occurred_at=event.occurred_at, recorded_at="", data=data, hash="",
    )  # fmt: skip
