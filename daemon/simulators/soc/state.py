"""The SOC simulator's in-memory desk: tickets, comments, audits, organizations,
users, webhooks, and the rules a Zendesk-shaped desk enforces.

Pure state plus rules, no HTTP: :class:`DeskState` methods take the calling
user and the decoded request body and either return the response document or
raise :class:`SimError` carrying the exact status and error body the real API
gives (see §2 and §4.1 of ../shared/reference/zendesk/NOTES.md, cited below as
NOTES §x). Every ticket change is reported to the registered listeners as a
:class:`TicketChange`, which the webhook dispatcher turns into signed
deliveries, so changes made through the API produce webhooks just as the real
desk does.
"""

from __future__ import annotations

import base64
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from daemon.simulators.soc import fixture
from daemon.simulators.soc.errors import SimError, bad_request, not_found, record_invalid
from daemon.simulators.soc.tickets import Ticket, TicketRules, fmt_time

Clock = Callable[[], datetime]
IDEMPOTENCY_TTL = timedelta(hours=2)  # NOTES §2.6 [3P, 4 sources agree]


@dataclass
class Organization:
    id: int
    name: str
    external_id: str | None
    created_at: datetime

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": f"{base_url}/api/v2/organizations/{self.id}.json",
            "name": self.name,
            "external_id": self.external_id,
            "domain_names": [],
            "details": None,
            "notes": None,
            "group_id": None,
            "shared_tickets": False,
            "shared_comments": False,
            "tags": [],
            "organization_fields": {},
            "created_at": fmt_time(self.created_at),
            "updated_at": fmt_time(self.created_at),
        }


@dataclass
class User:
    id: int
    name: str
    email: str
    role: str
    token: str
    organization_id: int | None

    @property
    def is_staff(self) -> bool:
        return self.role in ("admin", "agent")

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": f"{base_url}/api/v2/users/{self.id}.json",
            "name": self.name,
            "email": self.email,
            "role": self.role,
            "organization_id": self.organization_id,
            "active": True,
            "verified": True,
        }


@dataclass
class TicketChange:
    """One webhook-worthy change: ``kind`` is the part after
    ``zen:event-type:ticket.`` (created, status_changed, comment_added, ...)."""

    kind: str
    ticket_id: int
    event: dict[str, Any]
    detail: dict[str, Any]
    actor_id: int
    time: datetime


@dataclass
class _IdempotentResult:
    fingerprint: bytes
    expires: datetime
    response: dict[str, Any]  # the original response body, replayed on a hit


@dataclass
class DeskState:
    """The whole simulated desk. ``clock`` gives the current UTC time."""

    clock: Clock = field(default=lambda: datetime.now(UTC))
    organizations: dict[int, Organization] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    tickets: dict[int, Ticket] = field(default_factory=dict)
    listeners: list[Callable[[TicketChange], None]] = field(default_factory=list)
    _idempotency: dict[str, _IdempotentResult] = field(default_factory=dict)
    _ticket_ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(fixture.FIRST_TICKET_ID)
    )
    rules: TicketRules = field(init=False)

    def __post_init__(self) -> None:
        self.rules = TicketRules(self.clock, itertools.count(fixture.FIRST_COMMENT_ID))

    @classmethod
    def seeded(cls, clock: Clock | None = None) -> DeskState:
        """A desk holding the documented fixture (organizations and users)."""
        state = cls(clock=clock) if clock else cls()
        now = state.clock()
        for org in fixture.ORGANIZATIONS:
            state.organizations[org.id] = Organization(org.id, org.name, org.external_id, now)
        for u in fixture.USERS:
            state.users[u.id] = User(u.id, u.name, u.email, u.role, u.token, u.organization_id)
        return state

    # -- auth -------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> User | None:
        """The user an ``Authorization: Basic email/token:TOKEN`` header names."""
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            raw = base64.b64decode(authorization[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        login, _, token = raw.partition(":")
        email, sep, kind = login.rpartition("/")
        if not sep or kind != "token":
            return None
        for user in self.users.values():
            if user.email.lower() == email.lower() and user.token == token:
                return user
        return None

    # -- tickets ----------------------------------------------------------

    def ticket(self, ticket_id: int) -> Ticket:
        t = self.tickets.get(ticket_id)
        if t is None or t.deleted:
            raise not_found()
        return t

    def _requester(self, spec: Any, organization_id: int | None) -> int:
        """The user a write-only ``requester`` object names (NOTES §2.2): found by
        email, or created on the fly as an end user of ``organization_id``."""
        email = spec.get("email") if isinstance(spec, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise record_invalid("requester", "Requester: Email is invalid", "InvalidValue")
        for user in self.users.values():
            if user.email.lower() == email.lower():
                return user.id
        user_id = max(self.users, default=0) + 1
        name = str(spec.get("name") or email)
        # No token: a requester created on the fly cannot sign in to the API.
        token = f"!{secrets.token_hex(16)}"
        self.users[user_id] = User(user_id, name, email, "end-user", token, organization_id)
        return user_id

    def create_ticket(
        self, actor: User, body: Any, idempotency_key: str | None, base_url: str
    ) -> tuple[dict[str, Any], bool]:
        """Create a ticket from ``{"ticket": {...}}``. Returns the response body
        ``{"ticket": ..., "audit": ...}`` and whether it was an idempotent
        replay (``x-idempotency-lookup: hit``), which repeats the original body,
        audit included (NOTES §2.6).

        The OAS declares only ``{"ticket"}`` for a create (NOTES §2.1; §7 item 8
        leaves ``audit`` unverified), but its TicketUpdateResponseExample is a
        creation audit (``Create`` events, see tickets.py), and zenpy builds
        the ``TicketAudit`` its create idiom reads (``client.tickets.create(t)
        .ticket``) only from an answer holding both keys (NOTES §5,
        ``zenpy/lib/response.py``); so create answers as update does."""
        payload = _ticket_payload(body)
        now = self.clock()
        fingerprint = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        if idempotency_key is not None:
            self._expire_idempotency(now)
            prior = self._idempotency.get(idempotency_key)
            if prior is not None:
                if prior.fingerprint != fingerprint:
                    raise SimError(
                        400,
                        {
                            "error": "IdempotentRequestError",
                            "description": "Request parameters don't match the given "
                            "idempotency key",
                        },
                    )
                return prior.response, True
        org_id = payload.get("organization_id")
        if org_id is not None and org_id not in self.organizations:
            raise record_invalid("organization_id", "Organization: is invalid", "InvalidValue")
        if "requester" in payload:
            payload = {**payload, "requester_id": self._requester(payload["requester"], org_id)}
        ticket, audit = self.rules.new_ticket(next(self._ticket_ids), actor, payload, self.users)
        self.tickets[ticket.id] = ticket
        response = {"ticket": ticket.to_json(base_url), "audit": audit}
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = _IdempotentResult(
                fingerprint, now + IDEMPOTENCY_TTL, response
            )
        self._emit(ticket, [("created", {})], actor)
        return response, False

    def update_ticket(self, actor: User, ticket_id: int, body: Any) -> dict[str, Any]:
        """Apply ``{"ticket": {...}}``; returns the audit written (NOTES §2.2)."""
        ticket = self.ticket(ticket_id)
        payload = _ticket_payload(body)
        org_id = payload.get("organization_id")
        if org_id is not None and org_id not in self.organizations:
            raise record_invalid("organization_id", "Organization: is invalid", "InvalidValue")
        audit, changes = self.rules.update(ticket, actor, payload, self.users)
        if changes:
            self._emit(ticket, changes, actor)
        return audit

    def delete_ticket(self, actor: User, ticket_id: int) -> None:
        ticket = self.ticket(ticket_id)
        ticket.deleted = True
        self.rules.touch(ticket)
        self._emit(ticket, [("soft_deleted", {})], actor)

    def _expire_idempotency(self, now: datetime) -> None:
        for key in [k for k, v in self._idempotency.items() if v.expires <= now]:
            del self._idempotency[key]

    def _emit(self, ticket: Ticket, changes: list[tuple[str, dict[str, Any]]], actor: User) -> None:
        detail = self.event_detail(ticket, actor)
        for kind, event in changes:
            change = TicketChange(kind, ticket.id, event, detail, actor.id, self.clock())
            for listener in list(self.listeners):
                listener(change)

    def event_detail(self, ticket: Ticket, actor: User) -> dict[str, Any]:
        """The webhook ``detail`` object: ids as strings, enums upper-case
        (NOTES §3.3, Example B)."""

        def sid(v: int | None) -> str | None:
            return None if v is None else str(v)

        return {
            "actor_id": str(actor.id),
            "assignee_id": sid(ticket.assignee_id),
            "brand_id": "360000000001",
            "created_at": fmt_time(ticket.created_at),
            "custom_status": str(ticket.custom_status_id),
            "description": ticket.description,
            "external_id": ticket.external_id,
            "form_id": "360000000002",
            "group_id": None,
            "id": str(ticket.id),
            "is_public": ticket.is_public,
            "organization_id": sid(ticket.organization_id),
            "priority": ticket.priority.upper() if ticket.priority else None,
            "requester_id": sid(ticket.requester_id),
            "status": ticket.status.upper(),
            "subject": ticket.subject,
            "submitter_id": sid(ticket.submitter_id),
            "tags": list(ticket.tags),
            "type": ticket.type.upper() if ticket.type else None,
            "updated_at": fmt_time(ticket.updated_at),
            "via": {"channel": "web_service"},
        }

    # -- incremental export ----------------------------------------------

    def export_after(
        self, *, start_time: int | None, cursor: str | None, limit: int, lag_seconds: float
    ) -> tuple[list[Ticket], str | None, bool]:
        """Tickets changed after a position, in change order (NOTES §2.7).

        The cursor is opaque to clients; here it is base64 of the last
        returned change sequence number. Changes younger than ``lag_seconds``
        are held back, as the real export excludes the most recent minute.
        """
        if cursor is not None:
            try:
                after_seq = int(base64.urlsafe_b64decode(cursor.encode()).decode())
            except ValueError:
                raise SimError(
                    422, {"error": "InvalidValue", "description": "cursor is invalid"}
                ) from None
            candidates = [t for t in self.tickets.values() if t.seq > after_seq]
        else:
            assert start_time is not None
            after_seq = 0
            candidates = [t for t in self.tickets.values() if t.generated_timestamp >= start_time]
        horizon = self.clock() - timedelta(seconds=lag_seconds)
        visible = sorted((t for t in candidates if t.changed_at <= horizon), key=lambda t: t.seq)
        page = visible[:limit]
        end = len(visible) <= limit
        if page:
            last = page[-1].seq
        elif cursor is None:
            # An empty first page still pins "now": the cursor points past
            # every change already visible, not back to the beginning.
            seen = [t.seq for t in self.tickets.values() if t.changed_at <= horizon]
            last = max(seen, default=0)
        else:
            last = after_seq
        new_cursor = base64.urlsafe_b64encode(str(last).encode()).decode()
        return page, new_cursor, end


def _ticket_payload(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
        raise bad_request('The request body must be a JSON object {"ticket": {...}}')
    payload: dict[str, Any] = body["ticket"]
    return payload
