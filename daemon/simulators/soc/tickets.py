"""Ticket and comment records of the SOC simulator, and the rules for changing them.

Shapes follow the OAS ``TicketObject`` / ``TicketCommentObject`` /
``AuditObject`` (../shared/reference/zendesk/NOTES.md §2.2-§2.4, cited below as
NOTES §x). Rules: ``closed`` is final (422 on any update), ``solved`` can be
reopened, a ticket's ``description`` is its first comment (set by ``comment``,
or by ``description`` when no comment is sent), create and update both write an
audit and answer with it, a comment's ``public`` defaults to the first
comment's value, ``safe_update`` with a stale ``updated_stamp`` is a 409
(§2.5), and ``updated_at`` moves only when an update changes something.

Inferred, not from the reference: ``updated_at`` of one ticket strictly
increases (bumped by a second when two changes fall in the same second), so a
stale ``updated_stamp`` is always detectable at the API's one-second precision.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from daemon.simulators.soc.errors import SimError, record_invalid

if TYPE_CHECKING:
    from daemon.simulators.soc.state import User

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("urgent", "high", "normal", "low")
TYPES = ("problem", "incident", "question", "task")
# Standard custom-status ids per status category (values inferred).
CUSTOM_STATUS_IDS = {s: 100 + i for i, s in enumerate(STATUSES)}

# Ticket field -> webhook event kind (NOTES §3.3 event type list).
CHANGE_KINDS = {
    "status": "status_changed",
    "priority": "priority_changed",
    "subject": "subject_changed",
    "external_id": "external_id_changed",
    "organization_id": "organization_changed",
    "tags": "tags_changed",
    "assignee_id": "agent_assignment_changed",
    "type": "type_changed",
    "requester_id": "requester_changed",
}

# Fields besides subject and status that a creation audit reports when set.
# The update path audits the same fields (CHANGE_KINDS) as "Change" events.
CREATE_AUDITED = tuple(f for f in CHANGE_KINDS if f not in ("subject", "status"))


def fmt_time(dt: datetime) -> str:
    """ISO 8601 UTC at second precision, ``Z`` form (the API's timestamps)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime, or None if unparseable."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


@dataclass
class Comment:
    id: int
    body: str
    public: bool
    author_id: int
    created_at: datetime
    audit_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "Comment",
            "author_id": self.author_id,
            "body": self.body,
            "html_body": _html(self.body),
            "plain_body": self.body,
            "public": self.public,
            "attachments": [],
            "audit_id": self.audit_id,
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "metadata": {"system": {}, "custom": {}},
            "created_at": fmt_time(self.created_at),
        }


@dataclass
class Ticket:
    id: int
    subject: str
    status: str
    priority: str | None
    type: str | None
    external_id: str | None
    requester_id: int
    submitter_id: int
    assignee_id: int | None
    organization_id: int | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    changed_at: datetime  # wall time of the last change (export lag)
    seq: int  # global change order (incremental export cursor)
    comments: list[Comment] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def description(self) -> str:
        return self.comments[0].body if self.comments else ""

    @property
    def is_public(self) -> bool:
        return any(c.public for c in self.comments)

    @property
    def custom_status_id(self) -> int:
        return CUSTOM_STATUS_IDS[self.status]

    @property
    def generated_timestamp(self) -> int:
        return int(self.changed_at.timestamp())

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": f"{base_url}/api/v2/tickets/{self.id}.json",
            "external_id": self.external_id,
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": fmt_time(self.created_at),
            "updated_at": fmt_time(self.updated_at),
            "generated_timestamp": self.generated_timestamp,
            "type": self.type,
            "subject": self.subject,
            "raw_subject": self.subject,
            "description": self.description,
            "priority": self.priority,
            "status": self.status,
            "custom_status_id": self.custom_status_id,
            "recipient": None,
            "requester_id": self.requester_id,
            "submitter_id": self.submitter_id,
            "assignee_id": self.assignee_id,
            "organization_id": self.organization_id,
            "group_id": None,
            "collaborator_ids": [],
            "follower_ids": [],
            "email_cc_ids": [],
            "forum_topic_id": None,
            "problem_id": None,
            "has_incidents": False,
            "is_public": self.is_public,
            "due_at": None,
            "tags": list(self.tags),
            "custom_fields": [],
            "satisfaction_rating": None,
            "sharing_agreement_ids": [],
            "followup_ids": [],
            "ticket_form_id": None,
            "brand_id": 360000000001,
            "allow_channelback": False,
            "allow_attachments": True,
            "from_messaging_channel": False,
        }


def _html(body: str) -> str:
    return f'<div class="zd-comment" dir="auto"><p>{html.escape(body)}</p></div>'


def _comment_event(c: Comment) -> dict[str, Any]:
    """An audit's "Comment" event (NOTES §2.4: ``body``, ``html_body``,
    ``public``, ``attachments``)."""
    return {
        "id": c.id,
        "type": "Comment",
        "body": c.body,
        "html_body": _html(c.body),
        "public": c.public,
        "attachments": [],
    }


class TicketRules:
    """Creates tickets and applies updates; owns the comment, audit and change
    counters so ids are unique across the desk."""

    def __init__(self, clock: Callable[[], datetime], comment_ids: itertools.count[int]) -> None:
        self._clock = clock
        self._ids = comment_ids  # comments and audits share one id space, as in the OAS example
        self._seq = itertools.count(1)

    def touch(self, ticket: Ticket) -> None:
        """Record that ``ticket`` changed now."""
        now = self._clock().replace(microsecond=0)
        ticket.updated_at = max(now, ticket.updated_at + timedelta(seconds=1))
        ticket.changed_at = self._clock()
        ticket.seq = next(self._seq)

    def new_ticket(
        self, ticket_id: int, actor: User, p: Mapping[str, Any], users: Mapping[int, User]
    ) -> tuple[Ticket, dict[str, Any]]:
        """A new ticket and the audit of its creation, which create answers
        with alongside the ticket, as update does."""
        comment = _first_comment(p)
        body = _comment_body(comment)
        if not body:
            raise record_invalid("description", "Description: cannot be blank", "BlankValue")
        status = p.get("status") or "new"
        _check_enum("status", status, STATUSES)
        priority = p.get("priority")
        if priority is not None:
            _check_enum("priority", priority, PRIORITIES)
        ttype = p.get("type")
        if ttype is not None:
            _check_enum("type", ttype, TYPES)
        requester_id = p.get("requester_id", actor.id)
        if requester_id not in users:
            raise record_invalid("requester", "Requester: is invalid", "InvalidValue")
        now = self._clock()
        ticket = Ticket(
            id=ticket_id,
            subject=str(p.get("subject") or body.splitlines()[0][:80]),
            status=status,
            priority=priority,
            type=ttype,
            external_id=_opt_str(p.get("external_id")),
            requester_id=requester_id,
            submitter_id=actor.id,
            assignee_id=p.get("assignee_id"),
            organization_id=p.get("organization_id", users[requester_id].organization_id),
            tags=[str(t) for t in p.get("tags") or []],
            created_at=now.replace(microsecond=0),
            updated_at=now.replace(microsecond=0),
            changed_at=now,
            seq=next(self._seq),
        )

        # The creation audit takes the shape of the OAS TicketUpdateResponseExample
        # (../shared/reference/zendesk/zendesk-support-oas-2024-07.yaml L29545,
        # NOTES §2.2), whose "Create" events belong to a new ticket: subject, the
        # first comment's "Comment" event, status, custom_status_id, with ids
        # ascending in event order. Inferred: every other field that holds a
        # value after creation (defaults included) gets a "Create" event too.
        def create(name: str, value: Any) -> dict[str, Any]:
            return {"id": next(self._ids), "type": "Create", "field_name": name, "value": value}

        audit_id = next(self._ids)
        events = [create("subject", ticket.subject)]
        first = Comment(
            next(self._ids),
            body,
            bool(comment.get("public", True)) if isinstance(comment, dict) else True,
            int(comment.get("author_id", actor.id)) if isinstance(comment, dict) else actor.id,
            ticket.created_at,
            audit_id,
        )
        ticket.comments.append(first)
        events.append(_comment_event(first))
        events.append(create("status", ticket.status))
        events.append(create("custom_status_id", ticket.custom_status_id))
        for name in CREATE_AUDITED:
            value = getattr(ticket, name)
            if value is not None and value != []:
                # Tags stay a list, as in the update path's "Change" events,
                # although the OAS AuditObject types ``value`` string or integer.
                events.append(create(name, list(value) if name == "tags" else value))
        audit = self._audit(audit_id, ticket, actor, events)
        ticket.audits.append(audit)
        return ticket, audit

    def update(
        self, ticket: Ticket, actor: User, p: Mapping[str, Any], users: Mapping[int, User]
    ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        if ticket.status == "closed":
            # NOTES §4.1: updating a closed ticket is a RecordInvalid 422.
            raise record_invalid("status", "Status: closed prevents ticket update")
        if p.get("safe_update") in (True, "true"):
            stamp = parse_time(p.get("updated_stamp"))
            if stamp is None:
                raise record_invalid(
                    "updated_stamp",
                    "Updated stamp: is required (ISO 8601) when safe_update is true",
                    "InvalidValue",
                )
            if stamp.replace(microsecond=0) != ticket.updated_at:
                # NOTES §2.5 [3P body]: the stamp does not match updated_at.
                raise SimError(
                    409,
                    {
                        "error": "UpdateConflict",
                        "description": "Safe Update prevented the update due to outdated "
                        "ticket data. Please fetch the latest ticket data and try again.",
                    },
                )
        if "status" in p:
            _check_enum("status", p["status"], STATUSES)
        if p.get("priority") is not None:
            _check_enum("priority", p["priority"], PRIORITIES)
        if p.get("type") is not None:
            _check_enum("type", p["type"], TYPES)
        if "requester_id" in p and p["requester_id"] not in users:
            raise record_invalid("requester", "Requester: is invalid", "InvalidValue")
        comment = p.get("comment")
        body = _comment_body(comment) if comment is not None else None
        if comment is not None and not body:
            raise record_invalid("comment", "Comment: cannot be blank", "BlankValue")

        audit_id = next(self._ids)
        events: list[dict[str, Any]] = []
        changes: list[tuple[str, dict[str, Any]]] = []
        for name, kind in CHANGE_KINDS.items():
            if name not in p:
                continue
            new = p[name]
            if name == "tags":
                new = [str(t) for t in new or []]
            elif name == "external_id":
                new = _opt_str(new)
            old = getattr(ticket, name)
            if new == old:
                continue
            setattr(ticket, name, new)
            events.append(
                {
                    "id": next(self._ids),
                    "type": "Change",
                    "field_name": name,
                    "value": new,
                    "previous_value": old,
                }
            )
            changes.append((kind, _change_event(name, old, new)))
        if body:
            assert isinstance(comment, dict)
            default_public = ticket.comments[0].public if ticket.comments else True
            author_id = int(comment.get("author_id", actor.id))
            c = Comment(
                next(self._ids),
                body,
                bool(comment.get("public", default_public)),
                author_id,
                self._clock().replace(microsecond=0),
                audit_id,
            )
            ticket.comments.append(c)
            events.append(_comment_event(c))
            author = users.get(author_id, actor)
            changes.append(
                (
                    "comment_added",
                    {
                        "comment": {
                            "author": {
                                "id": str(author.id),
                                "is_staff": author.is_staff,
                                "name": author.name,
                            },
                            "body": body,
                            "html_body": _html(body),
                            "id": str(c.id),
                            "is_public": c.public,
                        }
                    },
                )
            )
        if changes:
            self.touch(ticket)
        audit = self._audit(audit_id, ticket, actor, events)
        if events:
            ticket.audits.append(audit)
        return audit, changes

    def _audit(
        self, audit_id: int, ticket: Ticket, actor: User, events: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": audit_id,
            "ticket_id": ticket.id,
            "created_at": fmt_time(ticket.updated_at),
            "author_id": actor.id,
            "metadata": {"system": {}, "custom": {}},
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "events": events,
        }


def _change_event(name: str, old: Any, new: Any) -> dict[str, Any]:
    def shown(v: Any) -> Any:
        if name in ("status", "priority", "type") and isinstance(v, str):
            return v.upper()  # NOTES §3.3: enums are upper-case in webhook events
        if name.endswith("_id") and v is not None:
            return str(v)
        return v

    return {"current": shown(new), "previous": shown(old)}


def _first_comment(p: Mapping[str, Any]) -> Any:
    """The comment object that becomes a new ticket's first comment (its description).

    ``comment`` is the documented input: "When creating a ticket, use
    `comment` to set the description" (OAS ``TicketObject.description``,
    ../shared/reference/zendesk/zendesk-support-oas-2024-07.yaml L20998;
    NOTES §2.2). zenpy's README creates ``Ticket(subject=..., description=...)``
    with no comment, so a string ``description`` stands in when ``comment`` is
    absent. The reference is silent on a create that sends both (it only calls
    ``description`` read-only), so the documented ``comment`` wins.
    """
    comment = p.get("comment")
    if comment is None:
        description = p.get("description")
        if isinstance(description, str):
            return {"body": description}
    return comment


def _comment_body(comment: Any) -> str:
    if isinstance(comment, dict):
        body = comment.get("body") or comment.get("html_body") or ""
        return str(body).strip()
    return ""


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _check_enum(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise record_invalid(name, f"{name.capitalize()}: {value!r} is not valid", "InvalidValue")
