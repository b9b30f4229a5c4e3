"""The SOC webhook intake: an aiohttp handler the daemon mounts at ``POST /webhooks/soc``.

Pipeline per delivery, each step refusing with a clear 4xx and a recorded
``intake.rejected`` event (stream ``intake:rejected``; metadata only, never
the body): size limit (413), signature headers, timestamp window and
constant-time HMAC check (401, :mod:`daemon.connectors.soc.signing`), JSON (400), the
event envelope schema and supported event types (422), tenant lookup by
``organization_id`` (422 for an organization that is not a configured
tenant). An accepted delivery is appended as ``soc.ticket.observed`` (and
``soc.comment.observed`` for ``ticket.comment_added``) and answered 200 once
durable; the same webhook event id delivered again is answered 200 and
written nowhere. Nothing else happens on the request path: no remote calls,
no sync decisions. The steps are :class:`WebhookIntake`'s methods, in order:
``verify`` (over the raw body), ``parse``, ``route`` (whose organization),
``record``.

The one non-4xx answer is 503 when no signing secret is installed yet
(``socbridge webhooks install`` has not run): that is this host's
misconfiguration, not bad input, and the desk will redeliver later.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.connectors.intake import BaseIntake, Kick, Refusal, answer, json_object
from daemon.connectors.soc import observe
from daemon.connectors.soc.settings import SocSettings
from daemon.connectors.soc.signing import SignatureError, WebhookSigner
from daemon.service.secrets import Secret, SecretError, load_secret
from eventstore import DuplicateEventError, EventStore

ROUTE = "/webhooks/soc"
Clock = Callable[[], datetime]
_ID = re.compile(r"^\d{1,19}$")


def _id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _ID.match(value):
        return int(value)
    raise ValueError("must be a numeric id")


class _Author(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    is_staff: bool | None = None
    name: str | None = None
    _v = field_validator("id", mode="before")(_id)


class _Comment(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    body: str | None = None
    is_public: bool
    author: _Author
    _v = field_validator("id", mode="before")(_id)


class _Detail(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    organization_id: int | None = None
    status: str
    priority: str | None = None
    subject: str | None = None
    external_id: str | None = None
    updated_at: str | None = None
    _v = field_validator("id", mode="before")(_id)

    @field_validator("organization_id", mode="before")
    @classmethod
    def _org(cls, value: Any) -> Any:
        return None if value in (None, "", "0", 0) else _id(value)

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        if value.lower() not in ("new", "open", "pending", "hold", "solved", "closed"):
            raise ValueError("is not a ticket status")
        return value

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ("urgent", "high", "normal", "low"):
            raise ValueError("is not a ticket priority")
        return value


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)
    type: str = Field(pattern=r"^zen:event-type:ticket\.[a-z_]+$")
    subject: str = Field(pattern=r"^zen:ticket:\d{1,19}$")
    time: str = Field(min_length=1, max_length=64)
    detail: _Detail
    event: dict[str, Any]


class SecretFile:
    """The signing secret, re-read when its file changes (``webhooks install``
    may rotate it while the daemon runs)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._stamp: tuple[int, int] | None = None
        self._secret: Secret | None = None

    def get(self) -> Secret:
        path = Path(self.ref)
        try:
            st = path.stat()
        except OSError:
            raise SecretError(f"signing secret file {path} does not exist") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if self._secret is None or stamp != self._stamp:
            self._secret = load_secret(self.ref)
            self._stamp = stamp
        return self._secret


class WebhookIntake(BaseIntake):
    """Verifies, validates and appends SOC webhook deliveries.

    ``tenants`` maps SOC organization id -> tenant (only tenants whose sync is on),
    consulted at every delivery, so a live mapping (the daemon's
    :class:`~daemon.sync.tenants.TenantDirectory`) follows tenant switches and
    reloads; ``clock`` gives the current UTC time; ``secret`` overrides where the
    signing secret comes from (default: the configured file); ``kick(ticket_id,
    tenant)`` is called for each new ticket accepted, so its description (first
    comment, which the created event does not carry) is read soon rather than at the
    next reconciliation.
    """

    path: ClassVar[str] = ROUTE
    source: ClassVar[str] = observe.SOURCE

    def __init__(
        self,
        store: EventStore,
        settings: SocSettings,
        tenants: Mapping[int, str],
        clock: Clock,
        *,
        secret: Callable[[], Secret] | None = None,
        kick: Kick | None = None,
    ) -> None:
        # Counted by outcome, named as the ConnectWise intake names its own: ``accepted``,
        # ``duplicate``, ``rejected.<reason>``, ``not_installed``.
        super().__init__(store, tenants, kick, structlog.get_logger("socbridge.soc.intake"))
        self.settings = settings
        self.clock = clock
        self._secret = secret or SecretFile(settings.webhook.signing_secret).get

    async def handle(self, request: web.Request) -> web.Response:
        size = 0
        envelope: _Envelope | None = None
        hook = self.settings.webhook
        try:
            body = await self.read(request, hook.max_body_bytes)
            size = len(body)
            try:
                key = self._secret()
            except SecretError as exc:
                self.counts["not_installed"] += 1
                self._log.error("soc.webhook.no_secret", error=str(exc))
                return answer(
                    {
                        "error": "not_installed",
                        "message": "no webhook signing secret on this host; "
                        "run 'socbridge webhooks install'",
                    },
                    status=503,
                )
            self.verify(key, request, body)
            envelope = self.parse(body)
            tenant = self.route(envelope)
            duplicate = await self.record(envelope, tenant)
        except Refusal as err:
            return await self._refuse(request, err, size, envelope.id if envelope else None)
        self.counts["duplicate" if duplicate else "accepted"] += 1
        if not duplicate:
            self.last_accepted = time.time()
        self._log.info(
            "soc.webhook.accepted", type=envelope.type, ticket=envelope.detail.id,
            tenant=tenant, duplicate=duplicate,
        )  # fmt: skip
        if self.kick is not None and not duplicate and envelope.type.endswith("ticket.created"):
            self.kick(int(envelope.detail.id), tenant)
        return answer({"status": "duplicate" if duplicate else "accepted"})

    def too_large(self, size: int | None, limit: int) -> str:
        if size is not None:
            return f"webhook body of {size} bytes exceeds {limit}"
        return f"webhook body exceeds {limit} bytes"

    def verify(self, key: Secret, request: web.Request, body: bytes) -> None:
        """The signature over timestamp and raw body, within the time window."""
        hook = self.settings.webhook
        signer = WebhookSigner(
            key, tolerance_seconds=hook.tolerance_seconds,
            max_future_seconds=hook.max_future_seconds, clock=self.clock,
        )  # fmt: skip
        try:
            signer.verify(request.headers, body)
        except SignatureError as exc:
            raise Refusal(401, exc.reason, str(exc)) from None

    def parse(self, body: bytes) -> _Envelope:
        """The webhook envelope, validated (422 for anything but a ticket event)."""
        return _parse(body)

    def route(self, envelope: _Envelope) -> str:
        """The tenant whose organization the ticket belongs to (422 when none syncs)."""
        org = envelope.detail.organization_id
        tenant = self.tenants.get(org) if org is not None else None
        if tenant is None:
            raise Refusal(
                422,
                "unknown_tenant",
                f"SOC organization {org} is not a configured tenant (or its sync is off); "
                "add it under [tenants] to sync its tickets",
            )
        return tenant

    async def record(self, env: _Envelope, tenant: str) -> bool:
        """Append the observation(s); True when this delivery was already recorded."""
        kind = env.type.removeprefix("zen:event-type:ticket.")
        change: dict[str, Any] = {"type": kind, "delivery_id": env.id}
        if "current" in env.event or "previous" in env.event:
            change["current"] = env.event.get("current")
            change["previous"] = env.event.get("previous")
        detail = env.detail.model_dump()
        ticket = observe.ticket_event(
            tenant=tenant,
            data=observe.ticket_data(detail, via="webhook", change=change),
            event_id=observe.webhook_event_id(env.id),
            occurred_at=env.time,
        )
        try:
            # No read first: the idempotent append says whether the id was recorded before.
            _, duplicate = await self._appender.append([ticket])
        except DuplicateEventError:
            raise Refusal(
                409, "event_id_reused",
                f"webhook event id {env.id} was already seen with other content",
            ) from None  # fmt: skip
        if kind == "comment_added":
            c = _Comment.model_validate(env.event["comment"])
            try:
                await self.store.append([
                    observe.note_event(
                        tenant=tenant, ticket_id=env.detail.id, comment_id=c.id, body=c.body,
                        public=c.is_public, author_id=c.author.id,
                        author_is_staff=c.author.is_staff, created_at=env.time, via="webhook",
                    )
                ])  # fmt: skip
            except DuplicateEventError:
                pass  # the poller saw this comment first; one observation per comment
        return duplicate

    async def _refuse(
        self, request: web.Request, err: Refusal, size: int, event_id: str | None
    ) -> web.Response:
        self.counts[f"rejected.{err.reason}"] += 1
        self._log.warning(
            "soc.webhook.refused", reason=err.reason, status=err.status, remote=request.remote
        )
        await self.record_rejection(
            {
                "intake": "soc",
                "reason": err.reason,
                "status": err.status,
                "message": err.detail,
                "remote": request.remote,
                "bytes": size,
                "webhook_id": request.headers.get("X-Zendesk-Webhook-Id"),
                "delivery_id": event_id,
            },
            occurred_at=self.clock().isoformat().replace("+00:00", "Z"),
        )
        return answer({"error": err.reason, "message": err.detail}, status=err.status)


def _parse(body: bytes) -> _Envelope:
    doc = json_object(
        body,
        invalid=functools.partial(Refusal, 400, "malformed_json", "webhook body is not valid JSON"),
        not_an_object=functools.partial(
            Refusal, 400, "malformed_json", "webhook body is not a JSON object"
        ),
    )
    try:
        env = _Envelope.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise Refusal(
            422, "schema", f"webhook envelope field {where}: {first['msg']} (not a ticket event?)"
        ) from None
    if int(env.subject.rsplit(":", 1)[1]) != env.detail.id:
        raise Refusal(422, "schema", "webhook subject and detail.id name different tickets")
    if env.type.endswith(".comment_added"):
        comment = env.event.get("comment")
        try:
            _Comment.model_validate(comment)
        except ValidationError:
            raise Refusal(422, "schema", "comment_added event has no valid event.comment") from None
    return env
