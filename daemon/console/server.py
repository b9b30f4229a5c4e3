"""The console's web application: pages, actions and its own listener.

Served by the daemon on ``[admin] listen`` (loopback by default), separate from
the public callback listener, so neither exposes the other's routes. Pages are
rendered on the server (Jinja2 through aiohttp-jinja2) from the projections
the daemon keeps in memory; the one script is the optional auto-refresh.
Every action is a POST carrying the session's CSRF token, appends an
``admin.*`` event naming who took it, and redirects back to a page that shows
its outcome.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from daemon.console import actions, pages
from daemon.console.auth import COOKIE, LOCAL, Sessions, Tokens
from daemon.console.explain import timeline
from daemon.console.sources import Bridge
from daemon.service.config import AdminSettings, canonical_config
from daemon.service.tls import server_context
from projections.state import is_side

HERE = Path(__file__).parent
BRIDGE = web.AppKey("bridge", Bridge)
SESSIONS = web.AppKey("sessions", Sessions)
TOKENS: web.AppKey[Tokens | None] = web.AppKey("tokens")
RECENT: web.AppKey[deque[actions.Action]] = web.AppKey("recent")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Pages anyone may load (the login form and its stylesheet).
OPEN_PATHS = frozenset({"/login", "/static/console.css"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Who:
    """Who is asking, and the key their CSRF token is derived from."""

    operator: str
    csrf_key: str


WHO = web.RequestKey("who", Who)


def _who(request: web.Request) -> Who | None:
    sessions, tokens = request.app[SESSIONS], request.app[TOKENS]
    header = request.headers.get("Authorization", "")
    if tokens is not None and header.startswith("Bearer "):
        name = tokens.match(header.removeprefix("Bearer ").strip())
        return Who(name, f"bearer:{name}") if name else None
    sid = request.cookies.get(COOKIE)
    session = sessions.get(sid)
    if session is not None and sid is not None:
        return Who(session.operator, sid)
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, check CSRF on POST, and add the security headers to every answer."""
    response = await _guarded(request, handler)
    response.headers.update(HEADERS)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    who = _who(request)
    new_sid = None
    if who is None and request.app[TOKENS] is None and request.method == "GET":
        # Loopback without tokens: whoever reaches the listener is this host's ``local``
        # (a POST must come from a page it loaded: its session's CSRF token, below).
        new_sid = request.app[SESSIONS].open(LOCAL)
        who = Who(LOCAL, new_sid)
    if who is None:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
        if request.app[TOKENS] is None:
            return _forbidden("this form has expired: reload the page and try again")
        return web.json_response(
            {"error": "a console token is needed (Authorization: Bearer TOKEN, or log in)"},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="socbridge console"'},
        )  # fmt: skip
    if request.method == "POST":
        form = await request.post()
        given = form.get("csrf")
        if not isinstance(given, str) or not request.app[SESSIONS].csrf_ok(who.csrf_key, given):
            return _forbidden("missing or wrong CSRF token: reload the page and try again")
    request[WHO] = who
    response = await handler(request)
    if new_sid is not None:
        _set_cookie(request, response, new_sid)
    return response


def _forbidden(message: str) -> web.Response:
    return web.Response(status=403, text=f"403 Forbidden: {message}\n")


def _set_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    response.set_cookie(
        COOKIE, sid, httponly=True, samesite="Strict", secure=request.secure, path="/"
    )


def _who_of(request: web.Request) -> Who:
    return request[WHO]


def _base(request: web.Request, page: str, **extra: Any) -> dict[str, Any]:
    who = _who_of(request)
    return {
        "page": page,
        "operator": who.operator,
        "csrf": request.app[SESSIONS].csrf(who.csrf_key),
        "can_logout": request.app[TOKENS] is not None,
        "refresh": request.query.get("refresh") == "1",
        "now": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "flash": request.query.get("done", ""),
        **extra,
    }


# ------------------------------------------------------------------------- pages


@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    view = await pages.overview(request.app[BRIDGE])
    return _base(request, "overview", view=view, since=pages.since)


@aiohttp_jinja2.template("problems.html")
async def problems(request: web.Request) -> dict[str, Any]:
    bridge = request.app[BRIDGE]
    answered = await actions.answered(bridge)
    rows = await actions.stamp_times(bridge, pages.problems(bridge, answered))
    recent = [await actions.outcome(bridge, a) for a in request.app[RECENT]]
    return _base(request, "problems", rows=rows, recent=recent)


@aiohttp_jinja2.template("links.html")
async def links(request: web.Request) -> dict[str, Any]:
    q = request.query
    page = int(q["page"]) if q.get("page", "").isdigit() else 1
    search = pages.LinkSearch(q.get("q", ""), q.get("tenant", ""), q.get("state", ""), page)
    view = pages.links(request.app[BRIDGE], search)
    tenants = [t.name for t in request.app[BRIDGE].config().tenants]
    return _base(request, "links", view=view, tenants=tenants)


@aiohttp_jinja2.template("links.html")
async def ticket(request: web.Request) -> dict[str, Any]:
    bridge = request.app[BRIDGE]
    key = request.match_info["key"]
    state = bridge.state()
    side, _, ident = key.partition(":")
    link = (state.link_for(side, ident) if is_side(side) and ident.isdigit() else None) or (
        state.links.get(key)
    )
    if link is None:
        raise web.HTTPNotFound(text=f"no link has ticket {key} (search Links by ticket id)")
    events = await actions.ticket_events(bridge, link)
    row = pages.link_row(bridge.config(), link, sum(1 for _ in state.commands_of(link.link_id)))
    return _base(request, "links", link=row, entries=timeline(events))


@aiohttp_jinja2.template("tenants.html")
async def tenants(request: web.Request) -> dict[str, Any]:
    bridge = request.app[BRIDGE]
    return _base(request, "tenants", rows=pages.tenant_rows(bridge, bridge.state()))


@aiohttp_jinja2.template("config.html")
async def config(request: web.Request) -> dict[str, Any]:
    bridge = request.app[BRIDGE]
    history = await bridge.store.read_stream("admin:config")
    # Secrets are references (a file path or credential:NAME) in the config itself.
    text = actions.as_toml(canonical_config(bridge.config()))
    return _base(request, "config", text=text, history=pages.applied_rows(history))


# ----------------------------------------------------------------------- actions


def _done(page: str, message: str) -> web.HTTPSeeOther:
    from urllib.parse import urlencode

    return web.HTTPSeeOther(f"{page}?{urlencode({'done': message})}")


async def act_on_command(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    command_id, action = str(form.get("command_id", "")), request.match_info["action"]
    bridge, who = request.app[BRIDGE], _who_of(request)
    if action == "reread":
        message = await actions.reread(bridge, str(form.get("link_id", "")), who.operator)
    else:
        message = await actions.on_command(bridge, command_id, action, who.operator)
    request.app[RECENT].appendleft(
        actions.Action(time.time(), who.operator, action, command_id, str(form.get("link_id", "")))
    )
    back = str(form.get("back", "/problems"))
    raise _done(back if back.startswith("/") and not back.startswith("//") else "/", message)


async def switch_tenant(request: web.Request) -> web.StreamResponse:
    name, verb = request.match_info["name"], request.match_info["verb"]
    message = await actions.switch_tenant(
        request.app[BRIDGE], name, verb == "enable", _who_of(request).operator
    )
    raise _done("/tenants", message)


@aiohttp_jinja2.template("login.html")
async def login_form(request: web.Request) -> dict[str, Any]:
    return {"page": "login", "next": request.query.get("next", "/"), "error": ""}


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    tokens = request.app[TOKENS]
    given = form.get("token")
    name = tokens.match(given) if tokens is not None and isinstance(given, str) else None
    target = str(form.get("next", "/"))
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    if name is None:
        structlog.get_logger("socbridge.console").warning("console.login_refused")
        context = {"page": "login", "next": target, "error": "That token is not valid."}
        response = aiohttp_jinja2.render_template("login.html", request, context)
        response.set_status(401)
        return response
    structlog.get_logger("socbridge.console").info("console.login", operator=name)
    response = web.HTTPSeeOther(target)
    _set_cookie(request, response, request.app[SESSIONS].open(name))
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].close(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def _at(unix: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(unix))


def build_console(bridge: Bridge, tokens: Tokens | None) -> web.Application:
    """The console as an aiohttp application (start it with :func:`start_console`)."""
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[BRIDGE] = bridge
    app[SESSIONS] = Sessions()
    app[TOKENS] = tokens
    app[RECENT] = deque(maxlen=20)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(when=pages.when, at=_at)
    app.router.add_get("/", overview)
    app.router.add_get("/problems", problems)
    app.router.add_get("/links", links)
    app.router.add_get("/tickets/{key}", ticket)
    app.router.add_get("/tenants", tenants)
    app.router.add_get("/config", config)
    app.router.add_post("/commands/{action:retry|skip|reread}", act_on_command)
    app.router.add_post("/tenants/{name}/{verb:enable|disable}", switch_tenant)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static", HERE / "static", append_version=False)
    return app


async def start_console(
    bridge: Bridge, settings: AdminSettings, tokens: Tokens | None, sock: socket.socket | None
) -> web.AppRunner:
    """Serve the console on ``sock`` (bound to ``settings.listen``), or bind that address
    now; the caller cleans the runner up."""
    app = build_console(bridge, tokens)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        context = server_context(settings.tls_cert, settings.tls_key)
    site: web.BaseSite = (
        web.SockSite(runner, sock, ssl_context=context)
        if sock is not None
        else web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    scheme = "https" if context is not None else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = runner.addresses[0][1] if runner.addresses else settings.port
    structlog.get_logger("socbridge.console").info(
        "console.listening", url=f"{scheme}://{host}:{port}/", tokens=app[TOKENS] is not None
    )
    return runner
