"""Normalised SOC observations: the events intake and polling append.

Webhook ``detail`` objects (string ids, upper-case enums,
../shared/reference/zendesk/NOTES.md §3.3, cited below as NOTES §x) and API
ticket objects (integer ids, lower-case enums, §2.2) are brought to one shape
so sync never cares how a change arrived. Event ids are derived from natural
keys so a repeated delivery or a re-read page is written once: a webhook
observation from the webhook event id, a polled ticket as
``daemon/connectors/polling.py`` says, a comment from its comment id whichever
path saw it first.

Streams, types and fields follow the project's conventions: stream
``soc:ticket:{id}``, ticket ``soc:{id}``, types ``soc.ticket.observed`` and
``soc.comment.observed``, ``data.via`` = ``webhook`` or ``poll``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from daemon.connectors import desk
from eventstore import NewEvent, derived_event_id
from projections import kinds

SOURCE = "soc"


def stream_for(ticket_id: int) -> str:
    return desk.stream_for("soc", ticket_id)


def ticket_key(ticket_id: int) -> str:
    return desk.ticket_key("soc", ticket_id)


def opt_int(value: Any) -> int | None:
    """An id that may arrive as a string (webhooks) or an integer (API)."""
    if value is None or value == "":
        return None
    return int(value)


def opt_lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def ticket_data(
    fields: Mapping[str, Any], *, via: str, change: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The normalised ticket fields sync needs, from a webhook detail or an API ticket."""
    return {
        "id": int(fields["id"]),
        "subject": fields.get("subject"),
        "status": opt_lower(fields.get("status")),
        "priority": opt_lower(fields.get("priority")),
        "organization_id": opt_int(fields.get("organization_id")),
        "external_id": fields.get("external_id"),
        "requester_id": opt_int(fields.get("requester_id")),
        "assignee_id": opt_int(fields.get("assignee_id")),
        "tags": list(fields.get("tags") or []),
        "created_at": fields.get("created_at"),
        "updated_at": fields.get("updated_at"),
        "change": dict(change) if change is not None else None,
        "via": via,
    }


#: A ``soc.ticket.observed`` event carrying ``data`` (see :func:`ticket_data`).
ticket_event = functools.partial(desk.ticket_observation, "soc", kinds.SOC_TICKET_OBSERVED, SOURCE)


def note_event_id(comment_id: int) -> str:
    return derived_event_id("soc", "comment", str(comment_id))


def webhook_event_id(delivery_id: str) -> str:
    return derived_event_id("soc", "webhook", delivery_id)


def note_event(
    *,
    tenant: str | None,
    ticket_id: int,
    comment_id: int,
    body: str | None,
    public: bool,
    author_id: int | None,
    author_is_staff: bool | None,
    created_at: str | None,
    via: str,
) -> NewEvent:
    data = {
        "ticket_id": ticket_id,
        "comment_id": comment_id,
        "body": body,
        "public": public,
        "author_id": author_id,
        "author_is_staff": author_is_staff,
        "created_at": created_at,
        "via": via,
    }
    return desk.observation(
        "soc", kinds.SOC_COMMENT_OBSERVED, ticket_id, data, tenant=tenant,
        event_id=note_event_id(comment_id), source=SOURCE, occurred_at=created_at,
    )  # fmt: skip
