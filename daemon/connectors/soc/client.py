"""Async client for the SOC desk (Zendesk Support API v2 shape) on :mod:`daemon.connectors.remote`.

Auth is an API token, ``Authorization: Basic base64("{email}/token:{token}")``
(../shared/reference/zendesk/NOTES.md §1, cited below as NOTES §x), revealed
only into each request's headers. Base URL ``{url}/api/v2``; paths carry the
``.json`` suffix the docs and clients use. Rate limit, concurrency cap and
retries (429 with ``Retry-After``, 5xx and timeouts with jittered backoff) are
:class:`daemon.connectors.remote.RemoteClient`'s; error bodies become
:mod:`daemon.connectors.soc.errors` exceptions.

Writes that are not naturally idempotent are guarded: ticket creation sends
an ``Idempotency-Key`` (§2.6) when the caller gives one, and is not retried
after an ambiguous failure without one; a comment is retried after an
ambiguous failure only when sent with ``safe_update`` + ``updated_stamp``
(§2.5), because a replay then meets a 409 instead of adding the comment twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from daemon.connectors.remote import RemoteClient, basic_auth
from daemon.connectors.soc.errors import SocApiError, SocError, parse_error
from daemon.connectors.soc.settings import SocSettings
from daemon.service.secrets import Secret

Json = dict[str, Any]
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("urgent", "high", "normal", "low")
#: Ids one ``show_many`` answers: "This endpoint will return up to 100 tickets records"
#: (../shared/reference/zendesk/zendesk-support-oas-2024-07.yaml, TicketsShowMany).
SHOW_MANY_MAX = 100


@dataclass(frozen=True)
class ExportPage:
    """One page of the cursor-based incremental ticket export (NOTES §2.7)."""

    tickets: list[Json]
    after_cursor: str | None
    end_of_stream: bool


def token_auth(email: str, token: Secret) -> dict[str, str]:
    """The Basic header for API-token auth; call only to put it on the wire."""
    return basic_auth(f"{email}/token", token.reveal())


class SocClient:
    """One SOC desk, as seen by socbridge's API user."""

    def __init__(self, remote: RemoteClient, *, background: bool = False) -> None:
        self.remote = remote
        self._background = background

    def background(self) -> SocClient:
        """This client for background reads (the poller's): they leave room in the rate
        limit for the outbox's requests (see :meth:`RemoteClient.request`)."""
        return SocClient(self.remote, background=True)

    @classmethod
    def from_settings(
        cls,
        settings: SocSettings,
        token: Secret,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> SocClient:
        email = settings.email
        remote = RemoteClient(
            name="soc",
            base_url=settings.api_base,
            error_parser=parse_error,
            auth=lambda: token_auth(email, token),
            headers={"Accept": "application/json"},
            limits=settings.limits(),
            retry=settings.retry(),
            session=session,
        )
        return cls(remote)

    def __repr__(self) -> str:
        return f"SocClient({self.remote!r})"

    async def close(self) -> None:
        await self.remote.close()

    async def __aenter__(self) -> SocClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_ambiguous: bool = True,
    ) -> Json:
        resp = await self.remote.request(
            method, path, params=params, json=json, headers=headers,
            retry_ambiguous=retry_ambiguous, background=self._background,
        )  # fmt: skip
        doc = resp.json()
        if not isinstance(doc, dict):
            raise SocError(
                f"SOC API {method} {path}: expected a JSON object, got {type(doc).__name__}"
            )
        return doc

    # -- users and organizations -------------------------------------------

    async def me(self) -> Json:
        """The authenticated user (checks the email/token pair)."""
        return dict((await self._json("GET", "users/me.json"))["user"])

    async def list_organizations(self) -> list[Json]:
        """Every organization (one per MSP customer), following cursor pages."""
        return await self._collect("organizations.json", "organizations")

    # -- tickets ----------------------------------------------------------------

    async def create_ticket(
        self,
        *,
        subject: str,
        body: str,
        organization_id: int,
        external_id: str | None = None,
        priority: str | None = None,
        public: bool = False,
        tags: Iterable[str] = (),
        idempotency_key: str | None = None,
    ) -> Json:
        """Create a ticket whose description (first comment) is ``body``.

        ``external_id`` carries the ConnectWise link marker. With an
        ``idempotency_key`` a retried create returns the original ticket.
        """
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
        ticket: Json = {
            "subject": subject,
            "comment": {"body": body, "public": public},
            "organization_id": organization_id,
        }
        if external_id is not None:
            ticket["external_id"] = external_id
        if priority is not None:
            ticket["priority"] = priority
        tags = list(tags)
        if tags:
            ticket["tags"] = tags
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        doc = await self._json(
            "POST",
            "tickets.json",
            json={"ticket": ticket},
            headers=headers,
            retry_ambiguous=idempotency_key is not None,
        )
        return dict(doc["ticket"])

    async def get_ticket(self, ticket_id: int) -> Json:
        return dict((await self._json("GET", f"tickets/{int(ticket_id)}.json"))["ticket"])

    async def get_tickets(self, ticket_ids: Iterable[int]) -> list[Json]:
        """The tickets of ``ticket_ids`` that exist, one ``show_many`` request per 100 ids
        (§2.1), each as :meth:`get_ticket` reads it; ids of no ticket are left out."""
        ids = list(dict.fromkeys(int(i) for i in ticket_ids))
        found: list[Json] = []
        for start in range(0, len(ids), SHOW_MANY_MAX):
            chunk = ",".join(str(i) for i in ids[start : start + SHOW_MANY_MAX])
            doc = await self._json("GET", "tickets/show_many.json", params={"ids": chunk})
            found.extend(doc.get("tickets") or [])
        return found

    async def find_by_external_id(self, external_id: str) -> list[Json]:
        """Tickets carrying ``external_id`` (not unique on the desk, NOTES §2.1)."""
        return await self._collect("tickets.json", "tickets", {"external_id": external_id})

    async def update_ticket(
        self,
        ticket_id: int,
        fields: Mapping[str, Any],
        *,
        comment: Mapping[str, Any] | None = None,
        updated_stamp: str | None = None,
    ) -> Json:
        """PUT changed ``fields`` (and optionally a comment); returns
        ``{"ticket", "audit"}``. With ``updated_stamp`` the update is a
        ``safe_update``: a ticket changed since then raises SocConflictError."""
        ticket: Json = dict(fields)
        if comment is not None:
            ticket["comment"] = dict(comment)
        if updated_stamp is not None:
            ticket["safe_update"] = True
            ticket["updated_stamp"] = updated_stamp
        # A comment without a stamp is not safe to replay after an ambiguous failure.
        ambiguous_ok = comment is None or updated_stamp is not None
        return await self._json(
            "PUT",
            f"tickets/{int(ticket_id)}.json",
            json={"ticket": ticket},
            retry_ambiguous=ambiguous_ok,
        )

    async def set_status(
        self, ticket_id: int, status: str, *, updated_stamp: str | None = None
    ) -> Json:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        doc = await self.update_ticket(ticket_id, {"status": status}, updated_stamp=updated_stamp)
        return dict(doc["ticket"])

    async def set_priority(
        self, ticket_id: int, priority: str, *, updated_stamp: str | None = None
    ) -> Json:
        if priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
        doc = await self.update_ticket(
            ticket_id, {"priority": priority}, updated_stamp=updated_stamp
        )
        return dict(doc["ticket"])

    async def add_comment(
        self,
        ticket_id: int,
        body: str,
        *,
        public: bool = False,
        author_id: int | None = None,
        updated_stamp: str | None = None,
    ) -> Json:
        """Add a comment (there is no comment endpoint; it is a ticket update, §2.3)."""
        comment: Json = {"body": body, "public": public}
        if author_id is not None:
            comment["author_id"] = author_id
        return await self.update_ticket(ticket_id, {}, comment=comment, updated_stamp=updated_stamp)

    async def list_comments(self, ticket_id: int) -> list[Json]:
        """All comments of a ticket, oldest first (the first is the description)."""
        return await self._collect(f"tickets/{int(ticket_id)}/comments.json", "comments")

    async def incremental_tickets(
        self, *, start_time: int | None = None, cursor: str | None = None
    ) -> ExportPage:
        """One page of ``/incremental/tickets/cursor``: from ``start_time``
        (unix seconds, first call) or from a previous page's ``after_cursor``."""
        if (start_time is None) == (cursor is None):
            raise ValueError("give exactly one of start_time and cursor")
        params: dict[str, str | int] = (
            {"cursor": cursor} if cursor is not None else {"start_time": int(start_time or 0)}
        )
        doc = await self._json("GET", "incremental/tickets/cursor.json", params=params)
        return ExportPage(
            tickets=list(doc.get("tickets") or []),
            after_cursor=doc.get("after_cursor"),
            end_of_stream=bool(doc.get("end_of_stream")),
        )

    # -- webhooks -----------------------------------------------------------------

    async def list_webhooks(self) -> list[Json]:
        return await self._collect("webhooks", "webhooks")

    async def create_webhook(self, spec: Mapping[str, Any]) -> Json:
        doc = await self._json(
            "POST", "webhooks", json={"webhook": dict(spec)}, retry_ambiguous=False
        )
        return dict(doc["webhook"])

    async def get_webhook(self, webhook_id: str) -> Json:
        return dict((await self._json("GET", f"webhooks/{webhook_id}"))["webhook"])

    async def update_webhook(self, webhook_id: str, spec: Mapping[str, Any]) -> None:
        await self.remote.request("PATCH", f"webhooks/{webhook_id}", json={"webhook": dict(spec)})

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.remote.request("DELETE", f"webhooks/{webhook_id}")

    async def signing_secret(self, webhook_id: str) -> Secret:
        """The webhook's signing secret (NOTES §3.1), as a :class:`Secret`."""
        doc = await self._json("GET", f"webhooks/{webhook_id}/signing_secret")
        secret = (doc.get("signing_secret") or {}).get("secret")
        if not isinstance(secret, str) or not secret:
            raise SocError(f"SOC webhook {webhook_id}: the signing secret response had no secret")
        return Secret(secret)

    # -- paging -------------------------------------------------------------------

    async def _collect(
        self, path: str, key: str, params: Mapping[str, str | int] | None = None
    ) -> list[Json]:
        """Every item of a list endpoint, cursor-paged (``page[size]=100``, §4.3)."""
        items: list[Json] = []
        query: dict[str, str | int] = {**(params or {}), "page[size]": 100}
        doc = await self._json("GET", path, params=query)
        while True:
            items.extend(doc.get(key) or [])
            nxt = (doc.get("links") or {}).get("next")
            if not (doc.get("meta") or {}).get("has_more") or not nxt:
                return items
            if URL(nxt).origin() != self.remote.base_url.origin():
                # Never send the credentials to another host.
                raise SocApiError(
                    f"SOC API paging link for {key} points to another host; refused",
                    status=0,
                )
            resp = await self.remote.request(
                "GET", URL(nxt, encoded=True), background=self._background
            )
            doc = resp.json()
