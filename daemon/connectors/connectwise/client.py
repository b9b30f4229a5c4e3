"""Async ConnectWise Manage REST 3.0 client on top of :mod:`daemon.connectors.remote`.

It discovers the codebase (``GET {site}/login/companyinfo/{companyId}``,
../shared/reference/connectwise/NOTES.md §1, cited below as NOTES §x), builds
``{site}/{codebase}apis/3.0``, and sends every request with Basic auth
``companyId+publicKey:privateKey``, the ``clientId`` header and a pinned
``Accept: application/vnd.connectwise.com+json; version=...``. Rate limit,
concurrency cap and retries come from :class:`daemon.connectors.remote.RemoteClient`;
error bodies become :mod:`daemon.connectors.connectwise.errors` exceptions.

Lists page to the end (``pageSize`` up to 1000, §2) following the ``Link``
header's ``rel="next"`` when present, else stopping at the first short page.
Updates are JSON-Patch with only the changed fields (§3.2); notes are created
with exactly one of the three section flags (§3.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from daemon.connectors.connectwise.errors import (
    CodebaseNotFoundError,
    CodebaseUnreachableError,
    ConnectWiseError,
    parse_error,
)
from daemon.connectors.connectwise.settings import ApiKeys, ConnectWiseSettings, NoteSection
from daemon.connectors.contract import (
    RemoteError,
    RemoteRateLimitedError,
    RemoteServerError,
    RemoteUnavailableError,
)
from daemon.connectors.remote import RemoteClient, RemoteResponse, basic_auth

MAX_PAGE_SIZE = 1000
#: Ticket ids one ``id in (...)`` read names. A page could hold 1000 (§2), but the ids
#: travel in the URL, whose limit ConnectWise does not document (§2: clients batch such
#: conditions to keep URLs short): 200 ids of up to 7 digits keep the query under 2 KB,
#: IIS's default ``maxQueryString``.
IDS_PER_READ = 200
NOTE_FLAGS: Mapping[NoteSection, str] = {
    "Discussion": "detailDescriptionFlag",
    "Internal Analysis": "internalAnalysisFlag",
    "Resolution": "resolutionFlag",
}

Json = dict[str, Any]


def note_section(note: Mapping[str, Any]) -> NoteSection | None:
    """The section a ConnectWise note belongs to, from its flags."""
    for section, flag in NOTE_FLAGS.items():
        if note.get(flag):
            return section
    return None


def patch_operations(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[Json]:
    """JSON-Patch ``replace`` operations for the fields of ``wanted`` that differ
    from ``current``. Reference fields compare by id (``{"id": N}`` is enough
    to write one, NOTES §3.1)."""
    ops: list[Json] = []
    for key, value in wanted.items():
        old = current.get(key)
        if isinstance(value, Mapping) and "id" in value:
            same = isinstance(old, Mapping) and old.get("id") == value["id"]
            value = {"id": value["id"]}
        else:
            same = old == value
        if not same:
            ops.append({"op": "replace", "path": f"/{key}", "value": value})
    return ops


def next_link(link_header: str | None) -> str | None:
    """The ``rel="next"`` URL of an RFC 5988 ``Link`` header, if any."""
    if not link_header:
        return None
    for part in link_header.split(","):
        section = part.strip()
        if not section.startswith("<") or ">" not in section:
            continue
        url, _, params = section[1:].partition(">")
        rels = [p.strip() for p in params.split(";")]
        if 'rel="next"' in rels or "rel=next" in rels:
            return url
    return None


async def discover_codebase(
    session: aiohttp.ClientSession, site_url: str, company_id: str, *, timeout_s: float = 30.0
) -> str:
    """The codebase (e.g. ``'v2025_1/'``) from ``/login/companyinfo/{companyId}``."""
    url = URL(site_url) / "login" / "companyinfo" / company_id
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            status = resp.status
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CodebaseUnreachableError(
            f"cannot reach {site_url} to look up the codebase ({type(exc).__name__}); "
            "check site_url and the network",
            attempts=1,
        ) from None
    if status != 200:
        raise parse_error(status, resp.headers, body)
    try:
        import orjson

        doc = orjson.loads(body) if body else None
    except ValueError:
        doc = None
    if doc is None:
        raise CodebaseNotFoundError(
            f"{site_url} does not know company {company_id!r}; check company_id "
            "(the identifier typed on the ConnectWise sign-in page) and site_url"
        )
    codebase = doc.get("Codebase") if isinstance(doc, dict) else None
    if not isinstance(codebase, str) or not codebase.strip("/"):
        raise ConnectWiseError(f"{site_url}/login/companyinfo answered without a Codebase")
    return codebase.strip("/") + "/"


def api_base(site_url: str, codebase: str) -> URL:
    return URL(f"{site_url}/{codebase}apis/3.0")


class Codebase:
    """The site's codebase, or how to look it up when ConnectWise did not answer at start.

    Shared by a client and its :meth:`ConnectWiseClient.background` twin: the first
    request that finds it unknown looks it up (one at a time) and points the
    remote's base URL at it; until then each request raises the look-up's error.
    """

    def __init__(self, value: str | None, lookup: Callable[[], Awaitable[str]] | None = None):
        self.value = value
        self._lookup = lookup
        self._lock = asyncio.Lock()

    async def resolve(self, remote: RemoteClient, site_url: str) -> None:
        if self.value is not None or self._lookup is None:
            return
        async with self._lock:
            if self.value is None:
                value = await self._lookup()
                remote.base_url = api_base(site_url, value)
                remote.health.answered()
                self.value = value


class ConnectWiseClient:
    """One ConnectWise Manage instance, as seen by socbridge's API member."""

    def __init__(
        self,
        remote: RemoteClient,
        codebase: str | Codebase,
        *,
        background: bool = False,
        site_url: str = "",
    ) -> None:
        self.remote = remote
        self._codebase = codebase if isinstance(codebase, Codebase) else Codebase(codebase)
        self._site_url = site_url
        self._background = background

    @property
    def codebase(self) -> str | None:
        """The codebase (``'v2025_1/'``), or ``None`` while its look-up still fails."""
        return self._codebase.value

    def background(self) -> ConnectWiseClient:
        """This client for background reads (the poller's): they leave room in the rate
        limit for the outbox's requests (see :meth:`RemoteClient.request`)."""
        return ConnectWiseClient(
            self.remote, self._codebase, background=True, site_url=self._site_url
        )

    async def _resolved(self) -> None:
        await self._codebase.resolve(self.remote, self._site_url)

    def __repr__(self) -> str:
        return f"ConnectWiseClient({self.remote!r})"

    @classmethod
    async def connect(
        cls,
        settings: ConnectWiseSettings,
        keys: ApiKeys,
        session: aiohttp.ClientSession,
        *,
        defer_lookup: bool = False,
    ) -> ConnectWiseClient:
        """Discover the codebase (unless configured) and build the client.

        With ``defer_lookup`` (the daemon), a look-up that fails for a reason time can
        fix (network, 5xx, 429) does not fail the start: it is retried before each
        request until it succeeds, and those requests fail as it did meanwhile.
        """

        async def lookup() -> str:
            return await discover_codebase(
                session, settings.site_url, settings.company_id, timeout_s=settings.timeout_seconds
            )

        codebase = Codebase(settings.codebase, lookup)
        deferred: RemoteError | None = None
        if codebase.value is None:
            try:
                codebase.value = await lookup()
            except (RemoteUnavailableError, RemoteServerError, RemoteRateLimitedError) as exc:
                if not defer_lookup:
                    raise
                deferred = exc
        company, public, private = settings.company_id, keys.public_key, keys.private_key

        def auth() -> dict[str, str]:
            return basic_auth(f"{company}+{public.reveal()}", private.reveal())

        remote = RemoteClient(
            name="connectwise",
            base_url=api_base(settings.site_url, codebase.value or ""),
            error_parser=parse_error,
            auth=auth,
            headers={
                "clientId": settings.client_id,
                "Accept": f"application/vnd.connectwise.com+json; version={settings.api_version}",
            },
            limits=settings.limits,
            retry=settings.retry,
            session=session,
        )
        if deferred is not None:
            remote.health.unreachable(f"codebase look-up: {deferred}")
        return cls(remote, codebase, site_url=settings.site_url)

    async def close(self) -> None:
        await self.remote.close()

    # ------------------------------------------------------------ primitives

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        await self._resolved()
        resp = await self.remote.request("GET", path, params=params, background=self._background)
        return resp.json()

    async def post(self, path: str, body: Any, *, idempotent: bool = False) -> Any:
        # A POST that timed out may have created the record: retrying could
        # create it twice, so only the unambiguous failures are retried.
        await self._resolved()
        resp = await self.remote.request("POST", path, json=body, retry_ambiguous=idempotent)
        return resp.json()

    async def patch(self, path: str, ops: list[Json]) -> Any:
        await self._resolved()
        return (await self.remote.request("PATCH", path, json=ops)).json()

    async def delete(self, path: str) -> None:
        await self._resolved()
        await self.remote.request("DELETE", path)

    async def record(self, method: str, path: str, body: Any = None, **kw: Any) -> Json:
        """One record (a JSON object) from ``method`` on ``path``; a
        :class:`~daemon.connectors.connectwise.errors.ConnectWiseError` for any other body."""
        if method == "GET":
            doc = await self.get(path)
        elif method == "POST":
            doc = await self.post(path, body, **kw)
        else:
            doc = await self.patch(path, body)
        if not isinstance(doc, dict):
            raise ConnectWiseError(
                f"ConnectWise {method} {path} answered {type(doc).__name__}, not a record"
            )
        return doc

    async def iter_list(
        self,
        path: str,
        *,
        conditions: str | None = None,
        order_by: str | None = None,
        fields: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[Json]:
        """Every record of a list endpoint, page by page to the end."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        params: dict[str, str | int] = {"page": 1, "pageSize": page_size}
        for key, value in (("conditions", conditions), ("orderBy", order_by), ("fields", fields)):
            if value:
                params[key] = value
        target: str | URL = path
        page: Mapping[str, str | int] | None = params
        await self._resolved()
        while True:
            resp: RemoteResponse = await self.remote.request(
                "GET", target, params=page, background=self._background
            )
            items = resp.json() or []
            for item in items:
                yield item
            link = next_link(resp.headers.get("Link"))
            if link is not None and URL(link).origin() != self.remote.base_url.origin():
                # Requests carry the credentials: never follow a link off the site.
                link = None
            if link is not None:
                target, page = URL(link, encoded=True), None
            elif len(items) < page_size:
                return
            else:
                # No Link header (some proxies strip it): count pages ourselves.
                params["page"] = int(params["page"]) + 1
                target, page = path, params

    async def list_all(self, path: str, **kw: Any) -> list[Json]:
        return [item async for item in self.iter_list(path, **kw)]

    async def count(self, path: str, conditions: str | None = None) -> int:
        params = {"conditions": conditions} if conditions else None
        doc = await self.get(f"{path.rstrip('/')}/count", params)
        return int(doc["count"])

    # ------------------------------------------------------------ resources

    async def company_info_system(self) -> Json:
        """``GET /system/info``: version and cloud flags (connectivity check)."""
        return await self.record("GET", "system/info")

    async def get_ticket(self, ticket_id: int) -> Json:
        return await self.record("GET", f"service/tickets/{int(ticket_id)}")

    async def get_tickets(self, ticket_ids: Iterable[int]) -> list[Json]:
        """The tickets of ``ticket_ids`` that exist, whole as :meth:`get_ticket` reads each,
        one ``conditions=id in (...)`` request per :data:`IDS_PER_READ` ids (§2); ids of
        no ticket are simply not listed."""
        ids = list(dict.fromkeys(int(i) for i in ticket_ids))
        found: list[Json] = []
        for start in range(0, len(ids), IDS_PER_READ):
            chunk = ",".join(str(i) for i in ids[start : start + IDS_PER_READ])
            # One page holds them all: no paging, which would ask for a page after a full one.
            params: dict[str, str | int] = {
                "conditions": f"id in ({chunk})",
                "pageSize": MAX_PAGE_SIZE,
            }
            found.extend(await self.get("service/tickets", params) or [])
        return found

    async def create_ticket(self, body: Mapping[str, Any]) -> Json:
        return await self.record("POST", "service/tickets", dict(body))

    async def update_ticket(
        self, ticket_id: int, changes: Mapping[str, Any], current: Mapping[str, Any] | None = None
    ) -> Json | None:
        """PATCH only the fields of ``changes`` that differ from ``current`` (all
        of them when ``current`` is not given); ``None`` when nothing changed."""
        ops = patch_operations(current or {}, changes)
        if not ops:
            return None
        return await self.record("PATCH", f"service/tickets/{int(ticket_id)}", ops)

    def iter_tickets(self, **kw: Any) -> AsyncIterator[Json]:
        return self.iter_list("service/tickets", **kw)

    async def list_notes(self, ticket_id: int) -> list[Json]:
        return await self.list_all(f"service/tickets/{int(ticket_id)}/notes", order_by="id asc")

    async def create_note(
        self, ticket_id: int, text: str, section: NoteSection, *, internal: bool = False
    ) -> Json:
        """A note in exactly one section (Discussion, Internal Analysis, Resolution)."""
        if section not in NOTE_FLAGS:
            raise ValueError(f"note section must be one of {', '.join(NOTE_FLAGS)}")
        if not text.strip():
            raise ValueError("a note needs text")
        body: Json = {"text": text, **{flag: name == section for name, flag in NOTE_FLAGS.items()}}
        if internal:
            body["internalFlag"] = True
        return await self.record("POST", f"service/tickets/{int(ticket_id)}/notes", body)

    async def boards(self) -> list[Json]:
        return await self.list_all("service/boards", order_by="id asc")

    async def board_statuses(self, board_id: int) -> list[Json]:
        return await self.list_all(f"service/boards/{int(board_id)}/statuses", order_by="id asc")

    async def priorities(self) -> list[Json]:
        return await self.list_all("service/priorities", order_by="id asc")

    async def sources(self) -> list[Json]:
        return await self.list_all("service/sources", order_by="id asc")

    async def companies(self, conditions: str | None = None) -> list[Json]:
        return await self.list_all("company/companies", conditions=conditions, order_by="id asc")

    async def members(self, conditions: str | None = None) -> list[Json]:
        return await self.list_all("system/members", conditions=conditions, order_by="id asc")

    async def security_role(self, role_id: int) -> Json:
        return await self.record("GET", f"system/securityroles/{int(role_id)}")

    async def security_role_settings(self, role_id: int) -> list[Json]:
        return await self.list_all(f"system/securityroles/{int(role_id)}/settings")

    async def callbacks(self, conditions: str | None = None) -> list[Json]:
        return await self.list_all("system/callbacks", conditions=conditions, order_by="id asc")

    async def create_callback(self, entry: Mapping[str, Any]) -> Json:
        # Safe to retry: a duplicate comes back as ObjectExists, not a second entry.
        return await self.record("POST", "system/callbacks", dict(entry), idempotent=True)

    async def delete_callback(self, callback_id: int) -> None:
        await self.delete(f"system/callbacks/{int(callback_id)}")
