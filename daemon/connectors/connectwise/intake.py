"""The ConnectWise callback intake: ``POST /callbacks/connectwise``.

A pipeline of small checks, each refusing with a clear 4xx (never a 5xx, and
nothing appended to ticket streams; the refusal is appended to
``intake:rejected`` and counted): body size, JSON, envelope fields,
``CompanyId`` equal to the configured login company, ``Metadata.key_url`` on
the configured site (refused without fetching), ``x-content-signature`` over
the raw body (constant time), ``Entity`` decoded from its JSON string and
consistent with ``ID``. An accepted ticket callback is appended as a
``connectwise.ticket.observed`` / ``connectwise.ticket.deleted`` event with an
id derived from ``MessageId`` (a duplicate delivery is written once) and
answered 200 once durable.

Callbacks that are valid but not ours are answered 200 with ``"ignored"`` and
append nothing: tickets of companies that are not tenants (a board can hold
other customers' tickets), tickets on other boards that socbridge never
recorded, non-ticket callback types, deletes of tickets it never recorded,
tickets of a tenant whose sync is off (R9). A
4xx there would make ConnectWise retry something that will never succeed.
The only remote call on the request path is the documented signing-key fetch;
its failure is a 503 so ConnectWise retries later.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from daemon.connectors.connectwise.observe import (
    SOURCE,
    TICKET_DELETED,
    TICKET_OBSERVED,
    known_tenant,
    route_ticket,
    stream_for,
    ticket_data,
    ticket_key,
)
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.connectwise.signing import (
    KeyFetchError,
    SignatureError,
    SigningKeyCache,
    check_key_url,
    signature_matches,
)
from daemon.connectors.intake import RepeatAwareAppender
from eventstore import DuplicateEventError, EventStore, NewEvent, derived_event_id

ROUTE_PATH = "/callbacks/connectwise"
ACTIONS = ("added", "updated", "deleted")
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Rejection(Exception):
    """A refused delivery: status, a short machine reason and a human detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass
class IntakeMetrics:
    """Counters by outcome (``accepted``, ``duplicate``, ``ignored.<why>``,
    ``rejected.<reason>``, ``key_fetch_failed``)."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)

    def count(self, name: str) -> None:
        self.counts[name] += 1


@dataclass
class CallbackIntake:
    """Verifies, normalises and appends ConnectWise callbacks."""

    store: EventStore
    settings: ConnectWiseSettings
    tenants: Mapping[int, str]
    keys: SigningKeyCache
    on_accepted: Callable[[int], None] | None = None  # e.g. wake the poller for notes
    metrics: IntakeMetrics = field(default_factory=IntakeMetrics)

    def __post_init__(self) -> None:
        self._log = structlog.get_logger("socbridge.intake.connectwise")
        self._appender = RepeatAwareAppender(self.store)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            raw = await self._read_body(request)
            payload = self._parse(raw)
            self._check_company(payload)
            await self._verify(request, payload, raw)
            return await self._record(payload)
        except Rejection as exc:
            return await self._reject(request, exc)
        except KeyFetchError as exc:
            self.metrics.count("key_fetch_failed")
            self._log.warning("callback.key_fetch_failed", error=str(exc))
            return _json(
                {"status": "unavailable", "detail": "signing key unavailable; retry later"},
                status=503,
            )

    # ---------------------------------------------------------------- checks

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.callback_max_body_bytes
        if request.content_length is not None:
            if request.content_length > limit:
                raise Rejection(
                    413, "too_large", f"body of {request.content_length} bytes > {limit}"
                )
            # The parser delivers no more than Content-Length: read to its end in one go.
            return await request.content.read()
        # Chunked: no length up front, so count while reading.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise Rejection(413, "too_large", f"body larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Rejection(400, "bad_json", "body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise Rejection(400, "bad_envelope", "body is not a JSON object")
        problems = []
        for name, kind in (("MessageId", str), ("CompanyId", str), ("Action", str),
                           ("Type", str), ("ID", int), ("Metadata", dict)):  # fmt: skip
            value = payload.get(name)
            if not isinstance(value, kind) or isinstance(value, bool) or value in ("", {}):
                problems.append(name)
        if "Entity" not in payload or not isinstance(payload["Entity"], str | None):
            problems.append("Entity")
        if problems:
            raise Rejection(400, "bad_envelope", f"missing or invalid {', '.join(problems)}")
        if payload["Action"] not in ACTIONS:
            raise Rejection(400, "bad_envelope", f"unknown Action {payload['Action']!r}")
        return payload

    def _check_company(self, payload: Mapping[str, Any]) -> None:
        if payload["CompanyId"].casefold() != self.settings.company_id.casefold():
            raise Rejection(403, "unknown_company", f"unknown CompanyId {payload['CompanyId']!r}")

    async def _verify(self, request: web.Request, payload: Mapping[str, Any], raw: bytes) -> None:
        header = request.headers.get("x-content-signature")
        if not header:
            raise Rejection(401, "unsigned", "x-content-signature header is missing")
        try:
            key_url = check_key_url(payload["Metadata"].get("key_url"), self.settings.site_url)
        except SignatureError as exc:
            raise Rejection(403, "unsafe_key_url", str(exc)) from None
        key = await self.keys.get(key_url)
        if key is not None and signature_matches(key, raw, header):
            return
        # The key may have been rotated since it was cached: fetch once more.
        fresh = await self.keys.get(key_url, refresh=True)
        if fresh is None or not signature_matches(fresh, raw, header):
            raise Rejection(401, "bad_signature", "x-content-signature does not match the body")

    # ---------------------------------------------------------------- outcome

    def _entity(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        if payload["Entity"] is None:
            if payload["Action"] != "deleted":
                raise Rejection(400, "bad_entity", f"Entity is null on Action {payload['Action']}")
            return None
        try:
            entity = orjson.loads(payload["Entity"])
        except orjson.JSONDecodeError:
            raise Rejection(400, "bad_entity", "Entity is not a JSON string") from None
        if not isinstance(entity, dict) or entity.get("id") != payload["ID"]:
            raise Rejection(400, "bad_entity", "Entity is not an object with the id of ID")
        return entity

    async def _record(self, payload: Mapping[str, Any]) -> web.Response:
        entity = self._entity(payload)
        if payload["Type"].lower() != "ticket":
            return self._ignored("not_a_ticket")
        ticket_id: int = payload["ID"]
        if entity is None:
            tenant = await known_tenant(self.store, ticket_id)
            why = "unknown_ticket"
        else:
            tenant, why = await route_ticket(self.store, self.settings.board, self.tenants, entity)
        if tenant is None:
            return self._ignored(why)
        if why != "tenant" and tenant not in self.tenants.values():
            # A known ticket (its tenant read from the log, not from the live map) of a
            # tenant whose sync is off now: not read either (R9).
            return self._ignored("tenant_sync_off")
        event_id = derived_event_id("connectwise", "callback", payload["MessageId"])
        writer = payload.get("MemberId") if isinstance(payload.get("MemberId"), str) else None
        if entity is None:
            data: dict[str, Any] = {
                "id": ticket_id, "updated_by": writer, "via": "callback",
                "own_write": writer == self.settings.api_member,
            }  # fmt: skip
            etype, occurred = TICKET_DELETED, None
        else:
            data = ticket_data(entity, via="callback", api_member=self.settings.api_member,
                               writer=writer)  # fmt: skip
            data["action"] = payload["Action"]
            etype, occurred = TICKET_OBSERVED, data["updated_at"]
        data["message_id"] = payload["MessageId"]
        # No read first: the append is idempotent on the derived id, and says whether
        # this MessageId was recorded before (daemon.connectors.intake).
        try:
            _, repeat = await self._appender.append([
                NewEvent(stream=stream_for(ticket_id), type=etype, data=data, tenant=tenant,
                         ticket=ticket_key(ticket_id), event_id=event_id, source=SOURCE,
                         occurred_at=occurred),
            ])  # fmt: skip
        except DuplicateEventError:
            # Recorded before with another body (routing or normalisation changed since):
            # the first observation stands, as for any repeat.
            repeat = True
        if repeat:
            self.metrics.count("duplicate")
            return _json({"status": "duplicate", "event_id": event_id})
        self.metrics.count("accepted")
        if self.on_accepted is not None and writer != self.settings.api_member:
            # socbridge's own write (an echo) added no note to read: waking the poller
            # would only spend the rate-capped API budget the outbox's next write needs.
            self.on_accepted(ticket_id)
        return _json({"status": "accepted", "event_id": event_id})

    def _ignored(self, why: str) -> web.Response:
        self.metrics.count(f"ignored.{why}")
        return _json({"status": "ignored", "reason": why})

    async def _reject(self, request: web.Request, exc: Rejection) -> web.Response:
        self.metrics.count(f"rejected.{exc.reason}")
        self._log.warning("callback.rejected", reason=exc.reason, detail=exc.detail,
                          remote=request.remote)  # fmt: skip
        try:
            await self.store.append([
                NewEvent(stream="intake:rejected", type="intake.rejected", source=SOURCE,
                         data={"source": SOURCE, "reason": exc.reason, "detail": exc.detail,
                               "status": exc.status, "remote": request.remote}),
            ])  # fmt: skip
        except Exception as err:
            self._log.error("callback.reject_not_recorded", error=type(err).__name__)
        return _json(
            {"status": "rejected", "reason": exc.reason, "detail": exc.detail}, status=exc.status
        )


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    """A JSON answer (orjson: a fraction of ``web.json_response``'s cost per request)."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


INTAKE_KEY = web.AppKey("connectwise_intake", CallbackIntake)


def make_callback_handler(
    store: EventStore,
    settings: ConnectWiseSettings,
    tenants: Mapping[int, str],
    key_cache: SigningKeyCache | None,
    http_session: aiohttp.ClientSession,
    *,
    on_accepted: Callable[[int], None] | None = None,
) -> Handler:
    """The aiohttp handler for ``POST /callbacks/connectwise`` (:data:`ROUTE_PATH`).

    ``tenants`` maps ConnectWise company id -> tenant key for the tenants whose
    sync is on; it is consulted on every callback, so a live mapping (the
    daemon's :class:`~daemon.sync.tenants.TenantDirectory`) follows tenant
    switches and reloads. ``key_cache`` may be
    shared with other handlers; ``None`` builds one on ``http_session``. The
    :class:`CallbackIntake` (with its metrics) is ``handler.__self__``.
    """
    keys = key_cache or SigningKeyCache(
        http_session, client_id=settings.client_id, ttl=settings.signing_key_ttl_seconds
    )
    intake = CallbackIntake(store, settings, tenants, keys, on_accepted)
    return intake.handle
