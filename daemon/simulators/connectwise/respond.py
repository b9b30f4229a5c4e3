"""HTTP plumbing of the ConnectWise simulator: ConnectWise-shaped responses and
error bodies, Basic-auth and ``clientId`` checks, role permission checks, and
list paging (``conditions``, ``orderBy``, ``fields``, ``page``, ``pageSize``,
``pageId``, ``Link`` headers).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from aiohttp import web

from daemon.simulators.connectwise import fixture
from daemon.simulators.connectwise.conditions import (
    compile_conditions,
    lookup,
    project_fields,
    sort_records,
)
from daemon.simulators.connectwise.fixture import Member
from daemon.simulators.connectwise.state import Json, SimError, SimState

CW_JSON = "application/vnd.connectwise.com+json"
LEVELS = {"add": 0, "edit": 1, "delete": 2, "inquire": 3}


def reply(
    request: web.Request, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    version = fixture.API_VERSION
    m = re.search(r"version=([\d.]+)", request.headers.get("Accept", ""))
    if m:
        version = m.group(1)
    return web.Response(
        status=status,
        body=b"" if status == 204 else orjson.dumps(data),
        headers={
            "Content-Type": f"{CW_JSON}; version={version}; charset=utf-8",
            "api-current-version": fixture.API_VERSION,
            **(headers or {}),
        },
    )


def error(request: web.Request, exc: SimError) -> web.Response:
    return reply(request, exc.body, exc.status)


def check_permission(
    state: SimState, member: Member, module: str, function: str, action: str
) -> None:
    role = state.roles[member.role_id]
    if role.admin:
        return
    levels = role.permissions.get((module, function), ("None",) * 4)
    if levels[LEVELS[action]] == "None":
        raise SimError(
            403,
            "Unauthorized",
            f"You do not have {action} access to {module} / {function}",
        )


def check_table(state: SimState, member: Member, entry: str) -> None:
    check_permission(state, member, "System", "Table Setup", "inquire")
    role = state.roles[member.role_id]
    if not role.admin and entry not in role.table_setup:
        raise SimError(403, "Unauthorized", f"Table Setup access to {entry} is disallowed")


def paged(request: web.Request, records: list[Json]) -> web.Response:
    """Filter, sort, page and project a list the way ConnectWise does."""
    q = request.query
    pred = compile_conditions(q.get("conditions"))
    rows = sort_records([r for r in records if pred(r)], q.get("orderBy"))
    try:
        page = int(q.get("page", "1"))
        size = min(int(q.get("pageSize", "25")), 1000)
        page_id = int(q["pageId"]) if "pageId" in q else None
    except ValueError:
        raise SimError(400, "InvalidObject", "page, pageSize and pageId must be integers") from None
    if page < 1 or size < 1:
        raise SimError(400, "InvalidObject", "page and pageSize must be positive")
    if page_id is not None:
        rows = [r for r in rows if (lookup(r, "id") or 0) > page_id]
        page = 1
    chunk = rows[(page - 1) * size : page * size]
    headers = {}
    last_page = max(1, (len(rows) + size - 1) // size)
    links = []
    if page > 1:
        links += [(1, "first"), (page - 1, "prev")]
    if page < last_page:
        links += [(page + 1, "next"), (last_page, "last")]
    if links:
        # As observed: page is the last query parameter (...?pageSize=1000&page=2).
        base = request.url.without_query_params("page", "pageSize")
        headers["Link"] = ", ".join(
            f'<{base.extend_query(pageSize=size).extend_query(page=n)}>; rel="{rel}"'
            for n, rel in links
        )
    return reply(request, [project_fields(r, q.get("fields")) for r in chunk], headers=headers)


async def body_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise SimError(400, "InvalidObject", "The request body is not valid JSON") from None


def authenticate(state: SimState, request: web.Request) -> Member:
    header = request.headers.get("Authorization", "")
    member = None
    if header.startswith("Basic "):
        try:
            user, _, private = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, private = "", ""
        company, _, public = user.partition("+")
        member = state.member_by_keys(company, public, private)
    if member is None:
        raise SimError(401, "Unauthorized", "The credentials are invalid or missing")
    if not request.headers.get("clientId"):
        raise SimError(401, "Unauthorized", "A clientId header is required")
    return member
