"""Event records: what callers append (:class:`NewEvent`) and what the log holds
(:class:`RecordedEvent`).

Every event says which tenant and which ticket it is about, what caused it
(``causation_id``), which conversation it belongs to (``correlation_id``) and
where it came from (``source``). The store assigns ``position``,
``stream_version``, ``recorded_at`` and ``hash``; everything else is the
caller's and is part of the event's identity for idempotent appends.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any, NamedTuple

#: Namespace for deterministic event ids (uuid5) derived from a natural key,
#: e.g. a ConnectWise callback ``MessageId``: the same delivery appended twice
#: gets the same id and is written once.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d7c2e-5b0a-4c1e-9d8f-3a2b1c0d9e8f")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def utc_now() -> datetime:
    """The current time in UTC: the one clock socbridge reads (``recorded_at``, intake's
    signature windows, the pollers' first look back)."""
    return datetime.now(UTC)


def new_event_id() -> str:
    """A fresh, time-ordered event id (UUID version 7, RFC 9562).

    Time-ordered ids land at the right edge of the event-id index, so a
    commit touches a page or two of it instead of one random page per event.
    """
    # The random part needs uniqueness, not secrecy: the PRNG is seeded from
    # os.urandom and reseeded in forked children, and costs no system call.
    ms = time.time_ns() // 1_000_000
    rand_a = random.getrandbits(12)
    rand_b = random.getrandbits(62)
    h = f"{ms & 0xFFFF_FFFF_FFFF:012x}{0x7000 | rand_a:04x}{0x8000_0000_0000_0000 | rand_b:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_event_id(*parts: str) -> str:
    """A deterministic event id for a natural key (idempotent intake).

    Exactly ``str(uuid.uuid5(EVENT_ID_NAMESPACE, "\\x1f".join(parts)))``, the
    standard uuid5 any tool can recompute, but computed without building a
    ``UUID`` object: every callback and every sync decision derives one, and
    building and formatting that object costs more than the hash itself.
    """
    digest = bytearray(
        sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``data`` must be JSON-serialisable by orjson."""

    stream: str
    type: str
    data: Mapping[str, Any]
    tenant: str | None = None
    ticket: str | None = None
    event_id: str = field(default_factory=new_event_id)
    causation_id: str | None = None
    correlation_id: str | None = None
    source: str = "socbridge"
    occurred_at: str | None = None
    schema_version: int = 1


class RecordedEvent(NamedTuple):
    """An event as stored in the log, with its place in it and its hash.

    A named tuple rather than a dataclass: replay builds one per event, and a
    tuple is the cheapest immutable record Python can make.
    """

    position: int
    event_id: str
    stream: str
    stream_version: int
    type: str
    schema_version: int
    tenant: str | None
    ticket: str | None
    causation_id: str | None
    correlation_id: str | None
    source: str
    occurred_at: str | None
    recorded_at: str
    data: dict[str, Any]
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict (the NDJSON export shape)."""
        return {
            "position": self.position,
            "event_id": self.event_id,
            "stream": self.stream,
            "stream_version": self.stream_version,
            "type": self.type,
            "schema_version": self.schema_version,
            "tenant": self.tenant,
            "ticket": self.ticket,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
            "source": self.source,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "data": self.data,
            "hash": self.hash,
        }
