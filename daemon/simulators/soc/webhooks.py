"""Webhooks of the SOC simulator: the registry (CRUD, signing secrets) and the
dispatcher that delivers signed event envelopes for every ticket change.

Webhook objects and rules follow ../shared/reference/zendesk/NOTES.md §3.2
(cited below as NOTES §x; ``id``, ``name``, ``endpoint``, ``http_method`` POST
and ``request_format`` json for event subscriptions, ``status``,
``subscriptions``); the signing secret endpoint is
``GET``/``POST /api/v2/webhooks/{id}/signing_secret`` (§3.1, reset by POST is
inferred). Deliveries carry the event envelope of §3.3 (string ids, upper-case
enums, ``zendesk_event_version`` "2022-11-06") and the two signature headers,
signed by the simulator's own signer (signing.py), not socbridge's.

Inferred, not from the reference: a failed delivery (5xx, timeout, refused
connection) is retried up to ``max_attempts`` times with a short backoff, each
attempt signed afresh; a 4xx is not retried. The fault knobs can drop,
duplicate or reorder deliveries (see ``faults.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from yarl import URL

from daemon.simulators.soc import fixture
from daemon.simulators.soc.errors import webhook_invalid, webhook_not_found
from daemon.simulators.soc.faults import FaultInjector
from daemon.simulators.soc.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from daemon.simulators.soc.state import Clock, TicketChange
from daemon.simulators.soc.tickets import fmt_time
from daemon.simulators.trust import client_session

EVENT_PREFIX = "zen:event-type:"
TICKET_EVENT_KINDS = (
    "created",
    "status_changed",
    "priority_changed",
    "comment_added",
    "subject_changed",
    "external_id_changed",
    "organization_changed",
    "tags_changed",
    "agent_assignment_changed",
    "type_changed",
    "requester_changed",
    "soft_deleted",
)
VALID_SUBSCRIPTIONS = frozenset(
    [f"{EVENT_PREFIX}ticket.{k}" for k in TICKET_EVENT_KINDS] + ["conditional_ticket_events"]
)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid() -> str:
    # Webhook ids look like ULIDs ("01FMJQSY40HZBCBVPZB9212S8V", NOTES §3.2).
    return "01" + "".join(secrets.choice(_CROCKFORD) for _ in range(24))


@dataclass
class Webhook:
    id: str
    name: str
    endpoint: str
    subscriptions: list[str]
    status: str
    secret: str
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    http_method: str = "POST"
    request_format: str = "json"
    custom_headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "endpoint": self.endpoint,
            "http_method": self.http_method,
            "request_format": self.request_format,
            "status": self.status,
            "subscriptions": list(self.subscriptions),
            "custom_headers": dict(self.custom_headers),
            "created_at": fmt_time(self.created_at),
            "created_by": str(fixture.API_USER_ID),
            "updated_at": fmt_time(self.updated_at),
            "updated_by": str(fixture.API_USER_ID),
        }


@dataclass
class WebhookRegistry:
    clock: Clock
    webhooks: dict[str, Webhook] = field(default_factory=dict)

    def get(self, webhook_id: str) -> Webhook:
        hook = self.webhooks.get(webhook_id)
        if hook is None:
            raise webhook_not_found()
        return hook

    def create(self, body: Any) -> Webhook:
        spec = _webhook_payload(body)
        now = self.clock()
        hook = Webhook(
            id=_ulid(),
            name="",
            endpoint="",
            subscriptions=[],
            status="active",
            secret=secrets.token_urlsafe(32),
            created_at=now,
            updated_at=now,
        )
        _apply(hook, spec, require_all=True)
        self.webhooks[hook.id] = hook
        return hook

    def update(self, webhook_id: str, body: Any, *, partial: bool) -> Webhook:
        hook = self.get(webhook_id)
        spec = _webhook_payload(body)
        trial = Webhook(**{**hook.__dict__})
        _apply(trial, spec, require_all=not partial)
        trial.updated_at = self.clock()
        self.webhooks[webhook_id] = trial
        return trial

    def delete(self, webhook_id: str) -> None:
        self.get(webhook_id)
        del self.webhooks[webhook_id]

    def reset_secret(self, webhook_id: str) -> Webhook:
        hook = self.get(webhook_id)
        hook.secret = secrets.token_urlsafe(32)
        return hook


def _webhook_payload(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("webhook"), dict):
        raise webhook_invalid('The request body must be {"webhook": {...}}', "/webhook")
    spec: dict[str, Any] = body["webhook"]
    return spec


def _apply(hook: Webhook, spec: dict[str, Any], *, require_all: bool) -> None:
    for name in ("name", "endpoint", "subscriptions", "http_method", "request_format"):
        if require_all and name not in spec:
            raise webhook_invalid(f"{name} is required", f"/webhook/{name}")
    if "name" in spec:
        if not isinstance(spec["name"], str) or not spec["name"].strip():
            raise webhook_invalid("name must be a non-empty string", "/webhook/name")
        hook.name = spec["name"]
    if "endpoint" in spec:
        url = URL(str(spec["endpoint"]))
        if url.scheme not in ("http", "https") or not url.host:
            raise webhook_invalid("endpoint must be an http(s) URL", "/webhook/endpoint")
        hook.endpoint = str(spec["endpoint"])
    if "http_method" in spec:
        hook.http_method = str(spec["http_method"]).upper()
    if "request_format" in spec:
        hook.request_format = str(spec["request_format"])
    if "status" in spec:
        if spec["status"] not in ("active", "inactive"):
            raise webhook_invalid("status must be active or inactive", "/webhook/status")
        hook.status = spec["status"]
    if "description" in spec:
        hook.description = spec["description"]
    if "custom_headers" in spec:
        hook.custom_headers = {str(k): str(v) for k, v in (spec["custom_headers"] or {}).items()}
    if "subscriptions" in spec:
        subs = spec["subscriptions"]
        if not isinstance(subs, list) or not subs:
            raise webhook_invalid(
                "subscriptions must be a non-empty list", "/webhook/subscriptions"
            )
        unknown = [s for s in subs if s not in VALID_SUBSCRIPTIONS]
        if unknown:
            raise webhook_invalid(f"unknown event type {unknown[0]!r}", "/webhook/subscriptions")
        hook.subscriptions = list(subs)
    # NOTES §3.2: event subscriptions need POST and json.
    if any(s.startswith(EVENT_PREFIX) for s in hook.subscriptions) and (
        hook.http_method != "POST" or hook.request_format != "json"
    ):
        raise webhook_invalid(
            "event-subscription webhooks must use http_method POST and request_format json",
            "/webhook/http_method",
        )


@dataclass
class Delivery:
    """One delivery attempt, kept for inspection (``GET /_sim/deliveries``)."""

    webhook_id: str
    event_id: str
    event_type: str
    ticket_id: int
    outcome: str  # "delivered 200" | "failed 500" | "dropped" | "error ..."
    attempt: int

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class WebhookDispatcher:
    """Turns ticket changes into signed deliveries, one at a time, in order
    (unless told to reorder)."""

    def __init__(
        self,
        registry: WebhookRegistry,
        faults: FaultInjector,
        clock: Clock,
        *,
        max_attempts: int = 3,
        retry_delay: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        self.registry = registry
        self.faults = faults
        self.clock = clock
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._queue: asyncio.Queue[tuple[Webhook, dict[str, Any]]] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None

    def on_change(self, change: TicketChange) -> None:
        """Listener for :class:`DeskState`: queue an envelope per subscribed webhook."""
        event_type = f"{EVENT_PREFIX}ticket.{change.kind}"
        for hook in list(self.registry.webhooks.values()):
            if hook.status == "active" and event_type in hook.subscriptions:
                self._queue.put_nowait((hook, envelope(change, event_type)))

    async def start(self) -> None:
        self._session = client_session()  # trusts a rehearsal CA (sim all --tls)
        self._worker = asyncio.create_task(self._run(), name="soc-sim-webhooks")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()

    async def drain(self) -> None:
        """Wait until every queued delivery has been attempted."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            batch = [item]
            if self.faults.settings.webhook_reorder:
                # Hold this one back until the next change arrives (or a short
                # while passes), then deliver the later one first.
                try:
                    later = await asyncio.wait_for(self._queue.get(), timeout=0.2)
                    batch.insert(0, later)
                except TimeoutError:
                    pass
            for hook, env in batch:
                try:
                    await self._deliver_with_faults(hook, env)
                finally:
                    self._queue.task_done()

    async def _deliver_with_faults(self, hook: Webhook, env: dict[str, Any]) -> None:
        plan = self.faults.webhook_plan()
        if plan == "drop":
            self._record(hook, env, "dropped", 0)
            return
        await self._deliver(hook, env)
        if plan == "duplicate":
            await self._deliver(hook, env)

    async def _deliver(self, hook: Webhook, env: dict[str, Any]) -> None:
        assert self._session is not None
        body = orjson.dumps(env)
        for attempt in range(1, self.max_attempts + 1):
            timestamp = fmt_time(self.clock())
            headers = {
                **hook.custom_headers,
                "Content-Type": "application/json",
                "User-Agent": "Zendesk Webhook",
                "X-Zendesk-Account-Id": str(fixture.ACCOUNT_ID),
                "X-Zendesk-Webhook-Id": hook.id,
                "X-Zendesk-Webhook-Invocation-Id": str(uuid.uuid4()),
                SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
                TIMESTAMP_HEADER: timestamp,
            }
            try:
                async with self._session.post(
                    hook.endpoint,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._record(hook, env, f"error {type(exc).__name__}", attempt)
            else:
                ok = status < 300
                self._record(hook, env, f"{'delivered' if ok else 'failed'} {status}", attempt)
                if ok or status < 500:
                    return
            if attempt < self.max_attempts:
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))

    def _record(self, hook: Webhook, env: dict[str, Any], outcome: str, attempt: int) -> None:
        ticket_id = int(env["subject"].rsplit(":", 1)[1])
        self.deliveries.append(
            Delivery(hook.id, env["id"], env["type"], ticket_id, outcome, attempt)
        )


def envelope(change: TicketChange, event_type: str) -> dict[str, Any]:
    """The event envelope of NOTES §3.3 for one ticket change."""
    when = change.time.astimezone(UTC)
    # Real deliveries carry nanosecond fractions ("...07.672717030Z").
    time = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z"
    return {
        "account_id": fixture.ACCOUNT_ID,
        "detail": change.detail,
        "event": change.event,
        "id": str(uuid.uuid4()),
        "subject": f"zen:ticket:{change.ticket_id}",
        "time": time,
        "type": event_type,
        "zendesk_event_version": "2022-11-06",
    }
