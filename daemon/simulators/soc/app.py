"""The SOC simulator's HTTP surface: a Zendesk-Support-API-v2-shaped aiohttp app.

Routes answer with the real envelopes (``{"ticket": ...}``, ``{"tickets":
[...]}`` with offset or cursor paging, ../shared/reference/zendesk/NOTES.md
§4.3, cited below as NOTES §x), accept paths with and without the ``.json``
suffix (§1; zenpy always sends it), authenticate ``email/token:TOKEN`` Basic
auth (§1), and refuse end users (403) and non-admins on admin-only endpoints
(incremental export, webhooks). Faults are injected before authentication.
``/_sim/...`` is the unauthenticated admin surface (faults, delivery log); bind
the simulator to loopback.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from daemon.simulators.soc.errors import SimError, bad_request, forbidden, unauthorized
from daemon.simulators.soc.faults import FaultInjector
from daemon.simulators.soc.state import DeskState, User
from daemon.simulators.soc.webhooks import WebhookDispatcher, WebhookRegistry

STATE = web.AppKey("soc_sim_state", DeskState)
FAULTS = web.AppKey("soc_sim_faults", FaultInjector)
HOOKS = web.AppKey("soc_sim_webhooks", WebhookRegistry)
DISPATCHER = web.AppKey("soc_sim_dispatcher", WebhookDispatcher)
EXPORT_LAG = web.AppKey("soc_sim_export_lag", float)
USER = web.RequestKey("soc_sim_user", User)
MAX_PAGE = 100
#: Tickets ``show_many`` answers at most: "This endpoint will return up to 100 tickets
#: records" (../shared/reference/zendesk/zendesk-support-oas-2024-07.yaml, TicketsShowMany).
#: Neither the spec nor NOTES.md names an error for more ids; read literally, the ids past
#: the first 100 are not answered, and that is what the simulator does.
SHOW_MANY_MAX = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _user(request: web.Request) -> User:
    return request[USER]


def _require(request: web.Request, role: str) -> User:
    user = _user(request)
    if role == "admin" and user.role != "admin":
        raise forbidden()
    if role == "staff" and not user.is_staff:
        raise forbidden()
    return user


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON") from None


def _int_param(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Parameter {name} must be an integer") from None


def paginate(request: web.Request, items: Sequence[Any], key: str) -> dict[str, Any]:
    """Offset paging by default; cursor paging when ``page[size]`` is sent (§4.3)."""
    here = request.url.with_scheme(request.scheme).with_host(request.host.split(":")[0])
    if request.url.port:
        here = here.with_port(request.url.port)
    if "page[size]" in request.query:
        size = max(1, min(MAX_PAGE, _int_param(request, "page[size]", MAX_PAGE)))
        after = request.query.get("page[after]")
        start = 0
        if after:
            try:
                start = int(base64.urlsafe_b64decode(after.encode()).decode())
            except ValueError:
                raise bad_request("page[after] is not a valid cursor") from None
        chunk = items[start : start + size]
        end = start + len(chunk)
        has_more = end < len(items)
        after_cursor = base64.urlsafe_b64encode(str(end).encode()).decode() if chunk else None
        before_cursor = base64.urlsafe_b64encode(str(start).encode()).decode() if chunk else None
        query = {k: v for k, v in request.query.items() if k not in ("page[after]", "page[before]")}
        nxt = None
        if has_more and after_cursor is not None:
            nxt = str(here.with_query({**query, "page[after]": after_cursor}))
        return {
            key: list(chunk),
            "meta": {
                "has_more": has_more,
                "after_cursor": after_cursor,
                "before_cursor": before_cursor,
            },
            "links": {"next": nxt, "prev": None},
        }
    per_page = max(1, min(MAX_PAGE, _int_param(request, "per_page", MAX_PAGE)))
    page = max(1, _int_param(request, "page", 1))
    chunk = items[(page - 1) * per_page : page * per_page]
    query = dict(request.query)

    def link(n: int) -> str:
        return str(here.with_query({**query, "page": str(n), "per_page": str(per_page)}))

    return {
        key: list(chunk),
        "next_page": link(page + 1) if page * per_page < len(items) else None,
        "previous_page": link(page - 1) if page > 1 else None,
        "count": len(items),
    }


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    faults = request.app[FAULTS]
    extra = faults.rate_limit_headers()
    try:
        if faults.settings.latency:
            await asyncio.sleep(faults.settings.latency)
        fault = faults.api_fault()
        if fault is not None:
            raise fault
        user = request.app[STATE].authenticate(request.headers.get("Authorization"))
        if user is None:
            raise unauthorized()
        request[USER] = user
        response = await handler(request)
        lost = faults.post_commit_fault()
        if lost is not None:
            raise lost
    except SimError as err:
        return json_response(err.body, err.status, {**extra, **err.headers})
    response.headers.update(extra)
    return response


# -- tickets --------------------------------------------------------------------


async def list_tickets(request: web.Request) -> web.Response:
    _require(request, "staff")
    state, url = request.app[STATE], base_url(request)
    tickets = [t for t in state.tickets.values() if not t.deleted]
    ext = request.query.get("external_id")
    if ext is not None:
        tickets = [t for t in tickets if t.external_id == ext]
    return json_response(paginate(request, [t.to_json(url) for t in tickets], "tickets"))


async def create_ticket(request: web.Request) -> web.Response:
    actor = _require(request, "staff")
    key = request.headers.get("Idempotency-Key")
    doc, hit = request.app[STATE].create_ticket(actor, await _body(request), key, base_url(request))
    headers = {"Location": doc["ticket"]["url"]}
    if key is not None:
        headers["x-idempotency-lookup"] = "hit" if hit else "miss"
    return json_response(doc, 201, headers)


async def show_ticket(request: web.Request) -> web.Response:
    _require(request, "staff")
    ticket = request.app[STATE].ticket(int(request.match_info["id"]))
    return json_response({"ticket": ticket.to_json(base_url(request))})


async def show_many_tickets(request: web.Request) -> web.Response:
    """``GET /tickets/show_many?ids=1,2,3``: ``{"tickets": [...]}`` in the shape of
    ``GET /tickets/{id}``, in the order asked; ids of no ticket (or a deleted one) are
    left out, not refused."""
    _require(request, "staff")
    raw = request.query.get("ids")
    if raw is None:
        raise bad_request("Parameter ids is required")
    try:
        ids = list(dict.fromkeys(int(part) for part in raw.split(",") if part.strip()))
    except ValueError:
        raise bad_request("Parameter ids must be a comma-separated list of ticket ids") from None
    state, url = request.app[STATE], base_url(request)
    found = [state.tickets.get(i) for i in ids[:SHOW_MANY_MAX]]
    return json_response(
        {"tickets": [t.to_json(url) for t in found if t is not None and not t.deleted]}
    )


async def update_ticket(request: web.Request) -> web.Response:
    actor = _require(request, "staff")
    state, tid = request.app[STATE], int(request.match_info["id"])
    audit = state.update_ticket(actor, tid, await _body(request))
    return json_response({"ticket": state.ticket(tid).to_json(base_url(request)), "audit": audit})


async def delete_ticket(request: web.Request) -> web.Response:
    actor = _require(request, "staff")
    request.app[STATE].delete_ticket(actor, int(request.match_info["id"]))
    return web.Response(status=204)


async def list_comments(request: web.Request) -> web.Response:
    _require(request, "staff")
    ticket = request.app[STATE].ticket(int(request.match_info["id"]))
    comments = [c.to_json() for c in ticket.comments]
    if request.query.get("sort_order") == "desc" or request.query.get("sort") == "-created_at":
        comments.reverse()
    return json_response(paginate(request, comments, "comments"))


async def list_audits(request: web.Request) -> web.Response:
    _require(request, "staff")
    ticket = request.app[STATE].ticket(int(request.match_info["id"]))
    return json_response(paginate(request, list(ticket.audits), "audits"))


async def incremental_tickets(request: web.Request) -> web.Response:
    _require(request, "admin")
    cursor = request.query.get("cursor")
    start_time = None
    if cursor is None:
        if "start_time" not in request.query:
            raise bad_request("start_time or cursor is required")
        start_time = _int_param(request, "start_time", 0)
    limit = max(1, min(1000, _int_param(request, "per_page", 1000)))
    tickets, after, end = request.app[STATE].export_after(
        start_time=start_time, cursor=cursor, limit=limit, lag_seconds=request.app[EXPORT_LAG]
    )
    url = base_url(request)
    after_url = f"{url}/api/v2/incremental/tickets/cursor.json?cursor={after}"
    return json_response(
        {
            "tickets": [t.to_json(url) for t in tickets],
            "after_cursor": after,
            "after_url": after_url,
            "before_cursor": None,
            "before_url": None,
            "end_of_stream": end,
        }
    )


# -- organizations and users ----------------------------------------------------


async def list_organizations(request: web.Request) -> web.Response:
    _require(request, "staff")
    url = base_url(request)
    orgs = [
        o.to_json(url)
        for o in sorted(request.app[STATE].organizations.values(), key=lambda o: o.id)
    ]
    return json_response(paginate(request, orgs, "organizations"))


async def show_organization(request: web.Request) -> web.Response:
    _require(request, "staff")
    org = request.app[STATE].organizations.get(int(request.match_info["id"]))
    if org is None:
        raise SimError(404, {"error": "RecordNotFound", "description": "Not found"})
    return json_response({"organization": org.to_json(base_url(request))})


async def me(request: web.Request) -> web.Response:
    return json_response({"user": _user(request).to_json(base_url(request))})


async def list_users(request: web.Request) -> web.Response:
    _require(request, "staff")
    url = base_url(request)
    users = [u.to_json(url) for u in sorted(request.app[STATE].users.values(), key=lambda u: u.id)]
    return json_response(paginate(request, users, "users"))


async def show_user(request: web.Request) -> web.Response:
    _require(request, "staff")
    user = request.app[STATE].users.get(int(request.match_info["id"]))
    if user is None:
        raise SimError(404, {"error": "RecordNotFound", "description": "Not found"})
    return json_response({"user": user.to_json(base_url(request))})


# -- webhooks -------------------------------------------------------------------


async def list_webhooks(request: web.Request) -> web.Response:
    _require(request, "admin")
    hooks = [h.to_json() for h in request.app[HOOKS].webhooks.values()]
    name = request.query.get("filter[name_contains]")
    if name:
        hooks = [h for h in hooks if name.lower() in h["name"].lower()]
    return json_response(paginate(request, hooks, "webhooks"))


async def create_webhook(request: web.Request) -> web.Response:
    _require(request, "admin")
    hook = request.app[HOOKS].create(await _body(request))
    return json_response({"webhook": hook.to_json()}, 201)


async def show_webhook(request: web.Request) -> web.Response:
    _require(request, "admin")
    return json_response({"webhook": request.app[HOOKS].get(request.match_info["wid"]).to_json()})


async def update_webhook(request: web.Request) -> web.Response:
    _require(request, "admin")
    partial = request.method == "PATCH"
    request.app[HOOKS].update(request.match_info["wid"], await _body(request), partial=partial)
    return web.Response(status=204)


async def delete_webhook(request: web.Request) -> web.Response:
    _require(request, "admin")
    request.app[HOOKS].delete(request.match_info["wid"])
    return web.Response(status=204)


async def signing_secret(request: web.Request) -> web.Response:
    _require(request, "admin")
    hooks = request.app[HOOKS]
    wid = request.match_info["wid"]
    hook = hooks.reset_secret(wid) if request.method == "POST" else hooks.get(wid)
    return json_response({"signing_secret": {"algorithm": "SHA256", "secret": hook.secret}})


# -- simulator admin ------------------------------------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[FAULTS].settings.model_dump())


async def patch_faults(request: web.Request) -> web.Response:
    try:
        patch = orjson.loads(await request.read())
        if not isinstance(patch, dict):
            raise ValueError("body must be a JSON object")
        settings = request.app[FAULTS].update(patch)
    except (ValueError, ValidationError) as exc:
        return json_response({"error": "InvalidFaults", "description": str(exc)}, 400)
    return json_response(settings.model_dump())


async def get_deliveries(request: web.Request) -> web.Response:
    return json_response([d.to_json() for d in request.app[DISPATCHER].deliveries])


def _routes() -> list[tuple[str, str, Handler]]:
    t = "/api/v2/tickets/{id:\\d+}"
    w = "/api/v2/webhooks/{wid:[0-9A-Za-z]+}"
    return [
        ("GET", "/api/v2/tickets", list_tickets),
        ("POST", "/api/v2/tickets", create_ticket),
        ("GET", "/api/v2/tickets/show_many", show_many_tickets),
        ("GET", t, show_ticket),
        ("PUT", t, update_ticket),
        ("DELETE", t, delete_ticket),
        ("GET", t + "/comments", list_comments),
        ("GET", t + "/audits", list_audits),
        ("GET", "/api/v2/incremental/tickets/cursor", incremental_tickets),
        ("GET", "/api/v2/organizations", list_organizations),
        ("GET", "/api/v2/organizations/{id:\\d+}", show_organization),
        ("GET", "/api/v2/users/me", me),
        ("GET", "/api/v2/users", list_users),
        ("GET", "/api/v2/users/{id:\\d+}", show_user),
        ("GET", "/api/v2/webhooks", list_webhooks),
        ("POST", "/api/v2/webhooks", create_webhook),
        ("GET", w, show_webhook),
        ("PUT", w, update_webhook),
        ("PATCH", w, update_webhook),
        ("DELETE", w, delete_webhook),
        ("GET", w + "/signing_secret", signing_secret),
        ("POST", w + "/signing_secret", signing_secret),
    ]


def make_app(
    state: DeskState,
    faults: FaultInjector,
    registry: WebhookRegistry,
    dispatcher: WebhookDispatcher,
    *,
    export_lag: float = 60.0,
) -> web.Application:
    """The simulator app over the given state; the dispatcher runs with the app."""
    app = web.Application(middlewares=[api_middleware])
    app[STATE] = state
    app[FAULTS] = faults
    app[HOOKS] = registry
    app[DISPATCHER] = dispatcher
    app[EXPORT_LAG] = export_lag
    for method, path, handler in _routes():
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path + ".json", handler)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_patch("/_sim/faults", patch_faults)
    app.router.add_get("/_sim/deliveries", get_deliveries)

    async def dispatcher_ctx(app: web.Application) -> Any:
        await dispatcher.start()
        state.listeners.append(dispatcher.on_change)
        yield
        state.listeners.remove(dispatcher.on_change)
        await dispatcher.stop()

    app.cleanup_ctx.append(dispatcher_ctx)
    return app
