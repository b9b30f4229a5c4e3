"""The steps both desks' intakes share: reading a bounded body, refusing, answering, and
appending an observation while telling a first delivery from a repeat.

Each desk's intake (``connectwise/intake.py``, ``soc/intake.py``) is a pipeline of
small checks in the order its desk's signing demands (a ConnectWise signature
names its key in the body, so the body is parsed first; a SOC signature covers
the raw body, so it is checked first). Every check refuses with a
:class:`Refusal`: a 4xx, a short machine reason, and a sentence; the refusal is
recorded as an ``intake.rejected`` event (metadata only, never the body) and
counted, and nothing is appended to a ticket stream.

Telling a repeat from a first delivery. Both intakes give each delivery an
event id derived from the sender's delivery id, so the store's idempotent
append writes a redelivery nowhere and hands back the original event as
recorded. What the intake still needs to know is *whether* it was a repeat (to
answer ``duplicate``, count it, and not wake a poller again). Reading the id
before appending would cost a reader-thread round trip per delivery; the
position the append returns answers it for free:

- such an id is appended by its intake only, so the original of a repeat is
  either older than this process (at or below the log's head, read once, before
  the first delivery's append) or an earlier append of this intake (at or below
  the highest position its appends were given);
- an event above both is new.

A redelivery that races its original (sent before the original was answered)
may be counted ``accepted`` as well; both are answered 200 with the same event
id and the log holds it once, exactly as with a read-then-append check, which
has the same race.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import orjson
import structlog
from aiohttp import web

from eventstore import EventStore, NewEvent, RecordedEvent
from projections import kinds

#: The stream every refused delivery is recorded in, whichever desk sent it.
REJECTED_STREAM = "intake:rejected"
#: Bytes read at a time from a body without a Content-Length.
CHUNK = 64 * 1024
#: Asks the desk's poller to read a ticket (and its notes) soon: (ticket id, tenant).
Kick = Callable[[int, str | None], None]


class Refusal(Exception):
    """A delivery refused: the HTTP status, a short machine reason and a human detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class TooLarge(Exception):
    """The body is larger than allowed; ``size`` is its Content-Length (``None`` when it
    came chunked and was cut off while being read)."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (:class:`TooLarge`) past ``limit`` bytes, whether its length
    was announced or it came chunked."""
    if request.content_length is not None:
        if request.content_length > limit:
            raise TooLarge(request.content_length)
        # The parser delivers no more than Content-Length: read to its end in one go.
        return await request.content.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLarge(None)
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(
    raw: bytes, *, invalid: Callable[[], Refusal], not_an_object: Callable[[], Refusal]
) -> dict[str, Any]:
    """The body as a JSON object, refused with ``invalid()`` (not JSON) or
    ``not_an_object()``: made only when refused, not on every delivery."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid() from None
    if not isinstance(doc, dict):
        raise not_an_object()
    return doc


def answer(body: Mapping[str, Any], status: int = 200) -> web.Response:
    """A JSON answer (orjson: a fraction of ``web.json_response``'s cost per request)."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class BaseIntake:
    """What every desk's intake holds: the log, the live tenant map, the poller's kick,
    the outcome counts (for ``/metrics``) and the repeat-aware appender."""

    path: ClassVar[str]
    #: The ``source`` of the events it appends.
    source: ClassVar[str]

    def __init__(
        self,
        store: EventStore,
        tenants: Mapping[int, str],
        kick: Kick | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.store = store
        self.tenants = tenants
        self.kick = kick
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_accepted: float | None = None
        self._log = log
        self._appender = RepeatAwareAppender(store)

    def too_large(self, size: int | None, limit: int) -> str:
        """The refusal's sentence for a body over ``limit`` (``size`` when announced)."""
        raise NotImplementedError

    async def read(self, request: web.Request, limit: int) -> bytes:
        """The whole body; a 413 :class:`Refusal` past ``limit`` bytes."""
        try:
            return await read_body(request, limit)
        except TooLarge as exc:
            raise Refusal(413, "too_large", self.too_large(exc.size, limit)) from None

    async def record_rejection(
        self, data: Mapping[str, Any], *, occurred_at: str | None = None
    ) -> None:
        """Append one ``intake.rejected`` event describing a refused delivery."""
        await self.store.append(
            [
                NewEvent(
                    stream=REJECTED_STREAM,
                    type=kinds.INTAKE_REJECTED,
                    data=dict(data),
                    source=self.source,
                    occurred_at=occurred_at,
                )
            ]
        )


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
