"""Appending an intake's observation and telling a first delivery from a repeat, in one write.

Both intakes (ConnectWise callbacks, SOC webhooks) give each delivery an event id
derived from the sender's delivery id, so the store's idempotent append writes a
redelivery nowhere and hands back the original event as recorded. What the
intake still needs to know is *whether* it was a repeat (to answer
``duplicate``, count it, and not wake a poller again). Reading the id before
appending answered that at the cost of a reader-thread round trip per delivery;
the position the append returns answers it for free:

- such an id is appended by its intake only, so the original of a repeat is
  either older than this process (at or below the log's head, read once, before
  the first delivery's append) or an earlier append of this intake (at or below
  the highest position its appends were given);
- an event above both is new.

A redelivery that races its original (sent before the original was answered)
may be counted ``accepted`` as well; both are answered 200 with the same event
id and the log holds it once, exactly as with a read-then-append check, which
had the same race.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventstore import EventStore, NewEvent, RecordedEvent


class RepeatAwareAppender:
    """Appends one delivery's events; says whether they were recorded before."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        #: Every event this intake's ids name at or below this position is known.
        self._known: int | None = None

    async def append(self, events: Sequence[NewEvent]) -> tuple[list[RecordedEvent], bool]:
        """``(recorded, repeat)``: the events as recorded, and True if none was new.

        Raises what :meth:`EventStore.append` raises (a
        :class:`~eventstore.DuplicateEventError` when an id was recorded with
        another body).
        """
        if self._known is None:
            head = await self.store.last_position()
            # Concurrent first deliveries each read a head: keep the highest.
            self._known = max(self._known or 0, head)
        known = self._known
        recorded = await self.store.append(events)
        top = max((r.position for r in recorded), default=0)
        if top <= known:
            return recorded, True
        self._known = max(self._known, top)
        return recorded, False
