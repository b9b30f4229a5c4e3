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
no sync decisions.

The one non-4xx answer is 503 when no signing secret is installed yet
(``socbridge webhooks install`` has not run): that is this host's
misconfiguration, not bad input, and the desk will redeliver later.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.connectors.intake import RepeatAwareAppender
from daemon.connectors.soc import observe
from daemon.connectors.soc.errors import SocIntakeError
from daemon.connectors.soc.settings import SocSettings
from daemon.connectors.soc.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify
from daemon.service.secrets import Secret, SecretError, load_secret
from eventstore import DuplicateEventError, EventStore, NewEvent

WEBHOOK_ROUTE = "/webhooks/soc"
REJECTED_STREAM = "intake:rejected"
REJECTED_TYPE = "intake.rejected"
Clock = Callable[[], datetime]
Handler = Callable[[web.Request], Awaitable[web.Response]]
_ID = re.compile(r"^\d{1,19}$")


class _Refusal(SocIntakeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


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


class _Tenant(Protocol):
    name: str
    soc_organization_id: int
    sync_enabled: bool


def tenants_by_organization(tenants: Iterable[_Tenant]) -> dict[int, str]:
    """The ``tenants`` mapping for :func:`make_webhook_handler` and the poller,
    from ``config.tenants``: only tenants whose sync is on (R9)."""
    return {t.soc_organization_id: t.name for t in tenants if t.sync_enabled}


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


def make_webhook_handler(
    store: EventStore,
    settings: SocSettings,
    tenants: Mapping[int, str],
    clock: Clock,
    *,
    secret: Callable[[], Secret] | None = None,
    on_created: Callable[[int, str], None] | None = None,
) -> Handler:
    """The ``POST /webhooks/soc`` handler.

    ``tenants`` maps SOC organization id -> tenant key (only tenants whose
    sync is on), consulted at every delivery, so a live mapping (the daemon's
    :class:`~daemon.sync.tenants.TenantDirectory`) follows tenant switches and
    reloads; ``clock`` gives the current UTC time; ``secret`` overrides
    where the signing secret comes from (default: the configured file);
    ``on_created(ticket_id, tenant)`` is called for each new ticket accepted, so
    its description (first comment, which the created event does not carry)
    can be read soon rather than at the next reconciliation.
    """
    hook = settings.webhook
    get_secret = secret or SecretFile(hook.signing_secret).get
    log = structlog.get_logger("socbridge.soc.intake")
    # Outcomes for /metrics, named as the ConnectWise intake names its own:
    # accepted, duplicate, rejected.<reason>, not_installed.
    counts: collections.Counter[str] = collections.Counter()
    appender = RepeatAwareAppender(store)

    async def refuse(
        request: web.Request, err: _Refusal, size: int, event_id: str | None
    ) -> web.Response:
        counts[f"rejected.{err.reason}"] += 1
        log.warning(
            "soc.webhook.refused", reason=err.reason, status=err.status, remote=request.remote
        )
        await store.append(
            [
                NewEvent(
                    stream=REJECTED_STREAM,
                    type=REJECTED_TYPE,
                    data={
                        "intake": "soc",
                        "reason": err.reason,
                        "status": err.status,
                        "message": str(err),
                        "remote": request.remote,
                        "bytes": size,
                        "webhook_id": request.headers.get("X-Zendesk-Webhook-Id"),
                        "delivery_id": event_id,
                    },
                    source="soc",
                    occurred_at=clock().isoformat().replace("+00:00", "Z"),
                )
            ]
        )
        return web.json_response({"error": err.reason, "message": str(err)}, status=err.status)

    async def handler(request: web.Request) -> web.Response:
        size = 0
        envelope: _Envelope | None = None
        try:
            body = await _read_limited(request, hook.max_body_bytes)
            size = len(body)
            try:
                key = get_secret()
            except SecretError as exc:
                counts["not_installed"] += 1
                log.error("soc.webhook.no_secret", error=str(exc))
                return web.json_response(
                    {
                        "error": "not_installed",
                        "message": "no webhook signing secret on this host; "
                        "run 'socbridge webhooks install'",
                    },
                    status=503,
                )
            try:
                verify(
                    key,
                    request.headers.get(SIGNATURE_HEADER),
                    request.headers.get(TIMESTAMP_HEADER),
                    body,
                    now=clock(),
                    tolerance_seconds=hook.tolerance_seconds,
                    max_future_seconds=hook.max_future_seconds,
                )
            except SignatureError as exc:
                raise _Refusal(401, exc.reason, str(exc)) from None
            envelope = _parse(body)
            org = envelope.detail.organization_id
            tenant = tenants.get(org) if org is not None else None
            if tenant is None:
                raise _Refusal(
                    422,
                    "unknown_tenant",
                    f"SOC organization {org} is not a configured tenant (or its sync is off); "
                    "add it under [tenants] to sync its tickets",
                )
            duplicate = await _append(store, appender, envelope, tenant)
        except _Refusal as err:
            return await refuse(request, err, size, envelope.id if envelope else None)
        counts["duplicate" if duplicate else "accepted"] += 1
        log.info(
            "soc.webhook.accepted",
            type=envelope.type,
            ticket=envelope.detail.id,
            tenant=tenant,
            duplicate=duplicate,
        )
        if on_created is not None and not duplicate and envelope.type.endswith("ticket.created"):
            on_created(int(envelope.detail.id), tenant)
        return web.json_response({"status": "duplicate" if duplicate else "accepted"})

    handler.counts = counts  # type: ignore[attr-defined]
    return handler


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _Refusal(
            413, "too_large", f"webhook body of {request.content_length} bytes exceeds {limit}"
        )
    # Read in chunks: a chunked body has no Content-Length to check up front.
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.read(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise _Refusal(413, "too_large", f"webhook body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> _Envelope:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Refusal(400, "malformed_json", "webhook body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _Refusal(400, "malformed_json", "webhook body is not a JSON object")
    try:
        env = _Envelope.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise _Refusal(
            422, "schema", f"webhook envelope field {where}: {first['msg']} (not a ticket event?)"
        ) from None
    if int(env.subject.rsplit(":", 1)[1]) != env.detail.id:
        raise _Refusal(422, "schema", "webhook subject and detail.id name different tickets")
    if env.type.endswith(".comment_added"):
        comment = env.event.get("comment")
        try:
            _Comment.model_validate(comment)
        except ValidationError:
            raise _Refusal(
                422, "schema", "comment_added event has no valid event.comment"
            ) from None
    return env


async def _append(
    store: EventStore, appender: RepeatAwareAppender, env: _Envelope, tenant: str
) -> bool:
    """Append the observation(s); True when this delivery was already recorded."""
    kind = env.type.removeprefix("zen:event-type:ticket.")
    change: dict[str, Any] = {"type": kind, "delivery_id": env.id}
    if "current" in env.event or "previous" in env.event:
        change["current"] = env.event.get("current")
        change["previous"] = env.event.get("previous")
    detail = env.detail.model_dump()
    event_id = observe.webhook_event_id(env.id)
    ticket = observe.ticket_event(
        tenant=tenant,
        data=observe.ticket_data(detail, via="webhook", change=change),
        event_id=event_id,
        occurred_at=env.time,
    )
    try:
        # No read first: the idempotent append says whether the id was recorded before.
        _, duplicate = await appender.append([ticket])
    except DuplicateEventError:
        raise _Refusal(
            409, "event_id_reused", f"webhook event id {env.id} was already seen with other content"
        ) from None
    if kind == "comment_added":
        c = _Comment.model_validate(env.event["comment"])
        try:
            await store.append(
                [
                    observe.comment_event(
                        tenant=tenant,
                        ticket_id=env.detail.id,
                        comment_id=c.id,
                        body=c.body,
                        public=c.is_public,
                        author_id=c.author.id,
                        author_is_staff=c.author.is_staff,
                        created_at=env.time,
                        via="webhook",
                    )
                ]
            )
        except DuplicateEventError:
            # The poller saw this comment first; one observation per comment.
            pass
    return duplicate
