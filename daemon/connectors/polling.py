"""What a poller last recorded of a ticket, and whether a fresh read says anything new.

Both pollers (and the re-reads the outbox asks of them) record a ticket only
when it differs from its last recorded observation, whichever path recorded
that one (callback, webhook, poll or fetch). Source times have one-second
resolution, so the time alone cannot name an observation: a ticket can go
A -> B -> A within one second. A polled observation's id is therefore derived
from the ticket, its time, a digest of its content *and* the observation it
follows. A repeat of the same read (a crash between the append and the
watermark, a re-read page) is written once; a ticket that came back to an
earlier state after another one is written again, so sync sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id

#: Keys that say how or why an observation was made, not what the ticket holds.
HOW = frozenset({"via", "action", "message_id", "updated_by", "own_write", "change",
                 "read_after", "fresh", "fetch"})  # fmt: skip
#: Events read from the end of a ticket's stream (more when no observation is among them).
RECENT_EVENTS = 64


def content(data: Mapping[str, Any]) -> dict[str, Any]:
    """What an observation says of the ticket itself."""
    return {k: v for k, v in data.items() if k not in HOW}


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return content(a) == content(b)


def digest(data: Mapping[str, Any]) -> str:
    """A short digest of an observation's whole ``data`` but ``via`` (which the id names
    already): one id never stands for two bodies."""
    body = orjson.dumps({k: v for k, v in data.items() if k != "via"}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


async def recent(store: EventStore, stream: str, type_: str) -> tuple[list[RecordedEvent], bool]:
    """The stream's latest events, enough to hold its last ``type_`` event, and whether
    they are the whole stream.

    A busy ticket's stream grows with every delivery: reading all of it on every
    refresh made each one cost more than the one before.
    """
    last = await store.last_in_stream(stream)
    if last is None:
        return [], True
    window = RECENT_EVENTS
    while True:
        start = max(1, last.stream_version - window + 1)
        events = await store.read_stream(stream, start)
        if start == 1 or any(e.type == type_ for e in events):
            return events, start == 1
        window *= 8


def last_of(events: list[RecordedEvent], type_: str) -> RecordedEvent | None:
    return next((e for e in reversed(events) if e.type == type_), None)


async def record_poll(
    store: EventStore,
    stream: str,
    type_: str,
    data: Mapping[str, Any],
    build: Callable[[str], NewEvent],
) -> tuple[list[RecordedEvent], bool, bool]:
    """Append ``build(event_id)`` unless ``data`` says what the stream's last ``type_``
    observation says; return the recent events read (see :func:`recent`), whether they
    are the whole stream, and whether an event was written.

    The id names the source, the stream, the time, a digest of ``data`` and the
    observation it follows. Raises what :meth:`EventStore.append` raises.
    """
    events, whole = await recent(store, stream, type_)
    last = last_of(events, type_)
    if last is not None and same_content(last.data, data):
        return events, whole, False
    follows = last.event_id if last is not None else ""
    event_id = derived_event_id("poll", stream, str(data.get("updated_at")), digest(data), follows)
    [recorded] = await store.append([build(event_id)])
    # An id recorded before returns its old position and writes nothing.
    return events, whole, recorded.position > (events[-1].position if events else 0)
