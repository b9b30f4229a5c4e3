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

Decisions have ids derived from their cause, so after a crash the inputs past
the checkpoint are decided again into the very same events, which the store
then writes only once. The checkpoint is saved only when nothing is waiting,
so it never sits in the middle of a cause and its decisions.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import structlog

from daemon.sync.decide import decide
from daemon.sync.rules import Rules
from eventstore import DuplicateEventError, EventStore, LogMovedError, NewEvent, RecordedEvent
from projections import kinds
from projections.fold import apply
from projections.persist import ProjectionStore
from projections.state import BridgeState

INPUTS = kinds.OBSERVATIONS | {kinds.COMMAND_DELIVERED}


class SyncEngine:
    """Folds the log into :attr:`state` and appends the decisions inputs imply."""

    def __init__(
        self,
        store: EventStore,
        rules: Rules,
        *,
        checkpoint_every: int = 500,
        checkpoint_idle_s: float = 1.0,
    ) -> None:
        self.store = store
        self.rules = rules
        self.projections = ProjectionStore(store)
        self.state = BridgeState()
        self.checkpoint_every = checkpoint_every
        self.checkpoint_idle_s = checkpoint_idle_s
        #: Set whenever the state changes; the outbox waits on it.
        self.changed = asyncio.Event()
        self._listeners: list[Callable[[RecordedEvent], None]] = []
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
            if stopped and self.quiescent and self._unsaved:
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

    async def _step(self, event: RecordedEvent) -> None:
        self._fold(event)
        self._deciding = True
        try:
            while self._deferred and not self._pending_own:
                if not await self._decide(self._deferred[0]):
                    break  # the log moved on: fold what came, then decide again
                self._deferred.popleft()
        finally:
            self._deciding = False
        if self.quiescent and self._unsaved >= self.checkpoint_every:
            await self.save()

    def _fold(self, event: RecordedEvent) -> None:
        """Fold one event and tell the listeners (in log order)."""
        self._last_step = asyncio.get_running_loop().time()
        apply(self.state, event)
        self._pending_own.discard(event.event_id)
        self._unsaved += 1
        if event.type in INPUTS:
            self._deferred.append(event)
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
            while self.state.position < end:
                batch = await self.store.read_batch(self.state.position + 1, 1000, until=end)
                if not batch:
                    return []  # not readable yet: decide nothing on a state short of the end
                for folded in batch:
                    self._fold(folded)
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
