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
answered 200 once durable. The steps are :class:`CallbackIntake`'s methods, in
order: ``parse``, ``verify``, ``route`` (is it ours, and whose), ``record``.

Callbacks that are valid but not ours are answered 200 with ``"ignored"`` and
append nothing: tickets of companies that are not tenants (a board can hold
other customers' tickets), tickets on other boards that socbridge never
recorded, non-ticket callback types, deletes of tickets it never recorded,
tickets of a tenant whose sync is off (R9). A
4xx there would make ConnectWise retry something that will never succeed.
The only remote call on the request path is the documented signing-key fetch
(keys are cached): a key ConnectWise says it does not have is a 401 (a forged
callback), and only a fetch that fails (network, 5xx) is a 503, so ConnectWise
retries later.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
import structlog
from aiohttp import web

from daemon.connectors.connectwise.observe import (
    SOURCE,
    known_tenant,
    route_ticket,
    stream_for,
    ticket_data,
    ticket_event,
    ticket_key,
)
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.connectwise.signing import (
    SIGNATURE_HEADER,
    KeyFetchError,
    SignatureError,
    SigningKeyCache,
    UnknownSigningKeyError,
    check_key_url,
)
from daemon.connectors.intake import BaseIntake, Kick, Refusal, answer, json_object
from eventstore import DuplicateEventError, EventStore, NewEvent, derived_event_id
from projections import kinds

ROUTE = "/callbacks/connectwise"
ACTIONS = ("added", "updated", "deleted")


class CallbackIntake(BaseIntake):
    """Verifies, normalises and appends ConnectWise callbacks.

    ``tenants`` maps ConnectWise company id -> tenant for the tenants whose sync is on;
    it is consulted on every callback, so a live mapping (the daemon's
    :class:`~daemon.sync.tenants.TenantDirectory`) follows tenant switches and reloads.
    ``kick`` (the poller's) is called for each accepted callback that may carry a note,
    since callbacks carry none.
    """

    path: ClassVar[str] = ROUTE
    source: ClassVar[str] = SOURCE

    def __init__(
        self,
        store: EventStore,
        settings: ConnectWiseSettings,
        tenants: Mapping[int, str],
        keys: SigningKeyCache,
        kick: Kick | None = None,
    ) -> None:
        # Counted by outcome: ``accepted``, ``duplicate``, ``ignored.<why>``,
        # ``rejected.<reason>``, ``key_fetch_failed``.
        super().__init__(store, tenants, kick, structlog.get_logger("socbridge.intake.connectwise"))
        self.settings = settings
        self.keys = keys

    async def handle(self, request: web.Request) -> web.Response:
        try:
            raw = await self.read(request, self.settings.callback_max_body_bytes)
            payload = self.parse(raw)
            await self.verify(request, payload, raw)
            return await self.record(payload)
        except Refusal as exc:
            return await self._reject(request, exc)
        except KeyFetchError as exc:
            self.counts["key_fetch_failed"] += 1
            self._log.warning("callback.key_fetch_failed", error=str(exc))
            return answer(
                {"status": "unavailable", "detail": "signing key unavailable; retry later"},
                status=503,
            )

    # ---------------------------------------------------------------- checks

    def too_large(self, size: int | None, limit: int) -> str:
        if size is not None:
            return f"body of {size} bytes > {limit}"
        return f"body larger than {limit} bytes"

    def parse(self, raw: bytes) -> dict[str, Any]:
        """The callback envelope (``Entity`` still a JSON string), refused unless whole."""
        payload = json_object(
            raw,
            invalid=functools.partial(Refusal, 400, "bad_json", "body is not valid JSON"),
            not_an_object=functools.partial(
                Refusal, 400, "bad_envelope", "body is not a JSON object"
            ),
        )
        problems = []
        for name, kind in (("MessageId", str), ("CompanyId", str), ("Action", str),
                           ("Type", str), ("ID", int), ("Metadata", dict)):  # fmt: skip
            value = payload.get(name)
            if not isinstance(value, kind) or isinstance(value, bool) or value in ("", {}):
                problems.append(name)
        if "Entity" not in payload or not isinstance(payload["Entity"], str | None):
            problems.append("Entity")
        if problems:
            raise Refusal(400, "bad_envelope", f"missing or invalid {', '.join(problems)}")
        if payload["Action"] not in ACTIONS:
            raise Refusal(400, "bad_envelope", f"unknown Action {payload['Action']!r}")
        if payload["CompanyId"].casefold() != self.settings.company_id.casefold():
            raise Refusal(403, "unknown_company", f"unknown CompanyId {payload['CompanyId']!r}")
        return payload

    async def verify(self, request: web.Request, payload: Mapping[str, Any], raw: bytes) -> None:
        """The signature, with the key from ``Metadata.key_url`` (only on the configured site)."""
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise Refusal(401, "unsigned", f"{SIGNATURE_HEADER} header is missing")
        try:
            key_url = check_key_url(payload["Metadata"].get("key_url"), self.settings.site_url)
        except SignatureError as exc:
            raise Refusal(403, "unsafe_key_url", str(exc)) from None
        try:
            key = await self.keys.get(key_url)
        except UnknownSigningKeyError as exc:
            raise Refusal(401, "unknown_signing_key", str(exc)) from None
        try:
            if key is not None:
                key.verify(raw, header)
                return
        except SignatureError:
            pass
        # The key may have been rotated since it was cached: fetch once more.
        fresh = await self.keys.get(key_url, refresh=True)
        try:
            if fresh is None:
                raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")
            fresh.verify(raw, header)
        except SignatureError:
            raise Refusal(
                401, "bad_signature", f"{SIGNATURE_HEADER} does not match the body"
            ) from None

    async def route(
        self, payload: Mapping[str, Any], entity: Mapping[str, Any] | None
    ) -> tuple[str | None, str]:
        """``(tenant, why)``: the tenant to record the callback under, or ``None`` with the
        reason it is not ours (answered 200 ``ignored``: a 4xx would be retried forever)."""
        if payload["Type"].lower() != "ticket":
            return None, "not_a_ticket"
        ticket_id: int = payload["ID"]
        if entity is None:
            tenant, why = await known_tenant(self.store, ticket_id), "unknown_ticket"
        else:
            tenant, why = await route_ticket(self.store, self.settings.board, self.tenants, entity)
        if tenant is not None and why != "tenant" and tenant not in self.tenants.values():
            # A known ticket (its tenant read from the log, not from the live map) of a
            # tenant whose sync is off now: not read either (R9).
            return None, "tenant_sync_off"
        return tenant, why

    # ---------------------------------------------------------------- outcome

    def _entity(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        if payload["Entity"] is None:
            if payload["Action"] != "deleted":
                raise Refusal(400, "bad_entity", f"Entity is null on Action {payload['Action']}")
            return None
        try:
            entity = orjson.loads(payload["Entity"])
        except orjson.JSONDecodeError:
            raise Refusal(400, "bad_entity", "Entity is not a JSON string") from None
        if not isinstance(entity, dict) or entity.get("id") != payload["ID"]:
            raise Refusal(400, "bad_entity", "Entity is not an object with the id of ID")
        return entity

    async def record(self, payload: Mapping[str, Any]) -> web.Response:
        """Append the observation a callback of ours carries, once per ``MessageId``."""
        entity = self._entity(payload)
        tenant, why = await self.route(payload, entity)
        if tenant is None:
            return self._ignored(why)
        ticket_id: int = payload["ID"]
        event_id = derived_event_id("connectwise", "callback", payload["MessageId"])
        writer = payload.get("MemberId") if isinstance(payload.get("MemberId"), str) else None
        if entity is None:
            data: dict[str, Any] = {
                "id": ticket_id, "updated_by": writer, "via": "callback",
                "own_write": writer == self.settings.api_member,
                "message_id": payload["MessageId"],
            }  # fmt: skip
            event = NewEvent(stream=stream_for(ticket_id), type=kinds.CW_TICKET_DELETED,
                             data=data, tenant=tenant, ticket=ticket_key(ticket_id),
                             event_id=event_id, source=SOURCE)  # fmt: skip
        else:
            data = ticket_data(entity, via="callback", api_member=self.settings.api_member,
                               writer=writer)  # fmt: skip
            data["action"] = payload["Action"]
            data["message_id"] = payload["MessageId"]
            event = ticket_event(
                tenant=tenant, data=data, event_id=event_id, occurred_at=data["updated_at"]
            )
        # No read first: the append is idempotent on the derived id, and says whether
        # this MessageId was recorded before (daemon.connectors.intake).
        try:
            _, repeat = await self._appender.append([event])
        except DuplicateEventError:
            # Recorded before with another body (routing or normalisation changed since):
            # the first observation stands, as for any repeat.
            repeat = True
        if repeat:
            self.counts["duplicate"] += 1
            return answer({"status": "duplicate", "event_id": event_id})
        self.counts["accepted"] += 1
        self.last_accepted = time.time()
        if self.kick is not None and writer != self.settings.api_member:
            # socbridge's own write (an echo) added no note to read: waking the poller
            # would only spend the rate-capped API budget the outbox's next write needs.
            self.kick(ticket_id, tenant)
        return answer({"status": "accepted", "event_id": event_id})

    def _ignored(self, why: str) -> web.Response:
        self.counts[f"ignored.{why}"] += 1
        return answer({"status": "ignored", "reason": why})

    async def _reject(self, request: web.Request, exc: Refusal) -> web.Response:
        self.counts[f"rejected.{exc.reason}"] += 1
        self._log.warning("callback.rejected", reason=exc.reason, detail=exc.detail,
                          remote=request.remote)  # fmt: skip
        try:
            await self.record_rejection(
                {"source": SOURCE, "reason": exc.reason, "detail": exc.detail,
                 "status": exc.status, "remote": request.remote},
            )  # fmt: skip
        except Exception as err:
            self._log.error("callback.reject_not_recorded", error=type(err).__name__)
        return answer(
            {"status": "rejected", "reason": exc.reason, "detail": exc.detail}, status=exc.status
        )
