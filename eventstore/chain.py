"""The hash chain: each event's hash covers the previous hash and its own canonical bytes.

Canonical bytes are the orjson encoding of a fixed-order list of the event's
fields, with ``data`` as its sorted-key JSON text, so anyone can recompute a
hash from an exported line, and an edited row shows up as the first position
whose hash no longer matches.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

GENESIS_HASH = "0" * 64

#: The order of the columns that are hashed (all but ``hash`` itself).
HASHED_FIELDS = (
    "position",
    "event_id",
    "stream",
    "stream_version",
    "type",
    "schema_version",
    "tenant",
    "ticket",
    "causation_id",
    "correlation_id",
    "source",
    "occurred_at",
    "recorded_at",
    "data",
)


def encode_data(data: Any) -> str:
    """The canonical JSON text of an event's data (sorted keys, orjson)."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def event_hash(prev_hash: str, fields: tuple[Any, ...]) -> str:
    """Hash of one event: SHA-256 over the previous hash and the canonical field list.

    ``fields`` are the values of :data:`HASHED_FIELDS` in order, ``data`` being
    its canonical JSON text.
    """
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(orjson.dumps(fields))
    return digest.hexdigest()
