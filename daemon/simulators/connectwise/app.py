"""The ConnectWise simulator's aiohttp application.

Serves ``/login/companyinfo/{id}``, the callback key URL, and the REST API under
``/{codebase}apis/3.0`` (paths matched case-insensitively, as pyconnectwise
writes ``securityRoles``): system info, members, security roles and their
settings, callbacks CRUD, boards and statuses, priorities, sources, companies,
tickets CRUD with JSON-Patch, notes, ``/count``, ``conditions`` / ``orderBy`` /
``fields`` / ``page`` / ``pageSize`` / ``pageId`` with ``Link`` headers.
Auth: 401 for a bad key pair or missing ``clientId``, 403 when the member's
role lacks the permission (see :mod:`.respond`). Admin
endpoints under ``/_sim/`` (faults, role permissions, delivery log) need no
auth: bind the simulator to loopback.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from yarl import URL

from daemon.simulators.connectwise import fixture
from daemon.simulators.connectwise.callbacks import CallbackDispatcher
from daemon.simulators.connectwise.conditions import ConditionError, compile_conditions
from daemon.simulators.connectwise.faults import Faults
from daemon.simulators.connectwise.fixture import Member
from daemon.simulators.connectwise.respond import (
    authenticate,
    body_json,
    check_permission,
    check_table,
    error,
    paged,
    reply,
)
from daemon.simulators.connectwise.state import Json, SimError, SimState

STATE_KEY = web.AppKey("cw_sim_state", SimState)
FAULTS_KEY = web.AppKey("cw_sim_faults", Faults)
DISPATCHER_KEY = web.AppKey("cw_sim_dispatcher", CallbackDispatcher)
API_PREFIXES = (f"/{fixture.CODEBASE}apis/3.0/", "/v4_6_release/apis/3.0/")
Handler = Callable[[web.Request, Member, re.Match[str]], Awaitable[web.StreamResponse]]


class Api:
    """Route table and handlers of the REST API part."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        s = state
        self._tables: dict[str, tuple[Callable[[], list[Json]], str | None]]
        t = self._tables = {
            "system/members": (lambda: [self.member_doc(m) for m in s.members.values()], None),
            "system/securityroles": (lambda: [self.role_doc(r.id) for r in s.roles.values()], None),
            "system/callbacks": (lambda: list(s.callbacks.values()), None),
            "service/boards": (lambda: list(s.boards.values()), "Service / ServiceBoard"),
            "service/priorities": (lambda: list(s.priorities.values()), "Service / Priority"),
            "service/sources": (lambda: list(s.sources.values()), ""),
            "company/companies/statuses": (
                lambda: [{"id": 1, "name": "Active"}], "Company / Company Statuses"
            ),
            "company/companies/types": (
                lambda: [{"id": 1, "name": "Client"}], "Company / Company Type"
            ),
        }  # fmt: skip
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for name in t:
            self.add("GET", rf"{name}(?P<count>/count)?", self.list_table)
            self.add("GET", rf"{name}/(?P<id>\d+)", self.get_one)
        self.add("GET", r"system/info", self.system_info)
        self.add(
            "GET",
            r"system/securityroles/(?P<role>\d+)/settings(?P<count>/count)?",
            self.role_settings,
        )
        self.add("POST", r"system/callbacks", self.create_callback)
        self.add("DELETE", r"system/callbacks/(?P<id>\d+)", self.delete_callback)
        self.add("PATCH", r"system/callbacks/(?P<id>\d+)", self.patch_callback)
        self.add("GET", r"service/boards/(?P<board>\d+)/statuses(?P<count>/count)?", self.statuses)
        self.add("GET", r"service/boards/(?P<board>\d+)/statuses/(?P<id>\d+)", self.status)
        self.add("GET", r"company/companies(?P<count>/count)?", self.companies)
        self.add("GET", r"company/companies/(?P<id>\d+)", self.company)
        self.add("GET", r"service/tickets(?P<count>/count)?", self.tickets)
        self.add("POST", r"service/tickets", self.create_ticket)
        self.add("GET", r"service/tickets/(?P<id>\d+)", self.ticket)
        self.add("PATCH", r"service/tickets/(?P<id>\d+)", self.patch_ticket)
        self.add("DELETE", r"service/tickets/(?P<id>\d+)", self.delete_ticket)
        self.add("GET", r"service/tickets/(?P<id>\d+)/notes(?P<count>/count)?", self.notes)
        self.add("POST", r"service/tickets/(?P<id>\d+)/notes", self.create_note)
        self.add("GET", r"service/tickets/(?P<id>\d+)/notes/(?P<note>\d+)", self.note)

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern + "$", re.IGNORECASE), handler))

    def member_doc(self, m: Member) -> Json:
        role = self.state.roles[m.role_id]
        return {
            "id": m.id,
            "identifier": m.identifier,
            "firstName": m.first_name,
            "lastName": m.last_name,
            "licenseClass": "A" if m.api_member else "F",
            "securityRole": {"id": role.id, "name": role.name},
            "hireDate": "2023-07-31T00:00:00Z",
            "defaultEmail": "Office",
            "defaultPhone": "Office",
            "primaryEmail": f"{m.identifier}@demo-msp.example",
            "inactiveFlag": False,
            "_info": {"lastUpdated": "2026-01-05T10:00:00Z", "updatedBy": "jsmith"},
        }

    def role_doc(self, role_id: int) -> Json:
        role = self.state.roles.get(role_id)
        if role is None:
            raise SimError(404, "NotFound", f"SecurityRole {role_id} not found")
        return {
            "id": role.id,
            "name": role.name,
            "roleType": "Standard",
            "adminFlag": role.admin,
            "inactiveFlag": False,
        }

    # -- handlers; each takes (request, member, match)

    async def list_table(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        name = m.group(0).lower().removesuffix("/count")
        fetch, table_entry = self._tables[name]
        # None: no permission needed (inferred); "": Table Setup only; else an allow-list entry.
        if table_entry:
            check_table(self.state, member, table_entry)
        elif table_entry == "":
            check_permission(self.state, member, "System", "Table Setup", "inquire")
        return self.list_or_count(request, m, fetch())

    def list_or_count(
        self, request: web.Request, m: re.Match[str], rows: list[Json]
    ) -> web.Response:
        if m.groupdict().get("count"):
            pred = compile_conditions(request.query.get("conditions"))
            return reply(request, {"count": sum(1 for r in rows if pred(r))})
        return paged(request, rows)

    async def get_one(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        name = m.group(0).lower().rsplit("/", 1)[0]
        rows = self._tables[name][0]()
        row = next((r for r in rows if r["id"] == int(m["id"])), None)
        if row is None:
            raise SimError(404, "NotFound", f"Record {m['id']} not found")
        return reply(request, row)

    async def system_info(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        return reply(request, {
            "version": f"v{fixture.API_VERSION}.100001", "isCloud": False, "serverTimeZone": "UTC",
            "licenseBits": [], "cloudRegion": "NA", "maxWorkFlowRecordsAllowed": 100,
        })  # fmt: skip

    async def role_settings(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        role = self.state.roles.get(int(m["role"]))
        if role is None:
            raise SimError(404, "NotFound", f"SecurityRole {m['role']} not found")
        rows = []
        for i, ((module, function), levels) in enumerate(sorted(role.permissions.items()), start=1):
            add, edit, delete, inquire = levels
            rows.append({
                "id": i, "moduleIdentifier": module.replace(" ", ""), "moduleName": module,
                "moduleDescription": module, "moduleFunctionName": function,
                "moduleFunctionIdentifier": function.replace(" ", ""),
                "moduleFunctionDescription": function, "addLevel": add, "editLevel": edit,
                "deleteLevel": delete, "inquireLevel": inquire, "customFlag": False,
            })  # fmt: skip
        return self.list_or_count(request, m, rows)

    async def create_callback(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        return reply(request, self.state.create_callback(await body_json(request), member), 201)

    async def patch_callback(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        ops = await body_json(request)
        return reply(request, self.state.patch_callback(int(m["id"]), ops, member))

    async def delete_callback(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        self.state.delete_callback(int(m["id"]))
        return reply(request, None, 204)

    async def statuses(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        check_table(self.state, member, "Service / ServiceBoard")
        board = int(m["board"])
        if board not in self.state.boards:
            raise SimError(404, "NotFound", f"Board {board} not found")
        rows = [s for s in self.state.statuses.values() if s["board"]["id"] == board]
        return self.list_or_count(request, m, rows)

    async def status(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        check_table(self.state, member, "Service / ServiceBoard")
        row = self.state.statuses.get(int(m["id"]))
        if row is None or row["board"]["id"] != int(m["board"]):
            raise SimError(404, "NotFound", f"BoardStatus {m['id']} not found")
        return reply(request, row)

    async def companies(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        check_permission(self.state, member, "Companies", "Company Maintenance", "inquire")
        return self.list_or_count(request, m, list(self.state.companies.values()))

    async def company(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        check_permission(self.state, member, "Companies", "Company Maintenance", "inquire")
        row = self.state.companies.get(int(m["id"]))
        if row is None:
            raise SimError(404, "NotFound", f"Company {m['id']} not found")
        return reply(request, row)

    def _tickets_perm(self, member: Member, action: str) -> None:
        check_permission(self.state, member, "Service Desk", "Service Tickets", action)

    def _check(self, member: Member) -> Callable[[str, str, str], None]:
        return lambda module, function, action: check_permission(
            self.state, member, module, function, action
        )

    async def tickets(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        self._tickets_perm(member, "inquire")
        rows = [self.state.render_ticket(t) for t in self.state.tickets.values()]
        return self.list_or_count(request, m, rows)

    async def create_ticket(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        self._tickets_perm(member, "add")
        body = await body_json(request)
        if not isinstance(body, dict):
            raise SimError(400, "InvalidObject", "ticket object is invalid")
        return reply(request, self.state.create_ticket(body, member, self._check(member)), 201)

    async def ticket(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        self._tickets_perm(member, "inquire")
        return reply(request, self.state.render_ticket(self.state.get_ticket(int(m["id"]))))

    async def patch_ticket(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        self._tickets_perm(member, "edit")
        ops = await body_json(request)
        return reply(
            request, self.state.patch_ticket(int(m["id"]), ops, member, self._check(member))
        )

    async def delete_ticket(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        self._tickets_perm(member, "delete")
        self.state.delete_ticket(int(m["id"]), member)
        return reply(request, None, 204)

    async def notes(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        self._tickets_perm(member, "inquire")
        return self.list_or_count(request, m, self.state.list_notes(int(m["id"])))

    async def note(self, request: web.Request, member: Member, m: re.Match[str]) -> web.Response:
        self._tickets_perm(member, "inquire")
        notes = self.state.list_notes(int(m["id"]))
        row = next((n for n in notes if n["id"] == int(m["note"])), None)
        if row is None:
            raise SimError(404, "NotFound", f"ServiceNote {m['note']} not found")
        return reply(request, row)

    async def create_note(
        self, request: web.Request, member: Member, m: re.Match[str]
    ) -> web.Response:
        self._tickets_perm(member, "edit")
        note = self.state.create_note(int(m["id"]), await body_json(request), member)
        return reply(request, note, 201)


async def dispatch(request: web.Request) -> web.StreamResponse:
    state, faults = request.app[STATE_KEY], request.app[FAULTS_KEY]
    path = request.path
    try:
        if path.lower().startswith("/login/companyinfo/"):
            return await company_info(request)
        if "/system/callbackkey/index.rails" in path.lower():
            key_fault = faults.take_api_fault(request.method, path, named_only=True)
            if key_fault is not None:
                return reply(request, {"code": "ServerError",
                                       "message": f"simulated HTTP {key_fault.status}"},
                             key_fault.status)  # fmt: skip
            return await callback_key(request)
        prefix = next((p for p in API_PREFIXES if path.lower().startswith(p.lower())), None)
        if prefix is None:
            raise SimError(404, "ConnectWiseApi", "The endpoint does not exist.")
        if faults.latency:
            await asyncio.sleep(faults.latency)
        fault = faults.take_api_fault(request.method, path)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = _fault_body(fault.status)
            return reply(request, body, fault.status, headers)
        member = authenticate(state, request)
        rest = path[len(prefix) :].strip("/")
        api: Api = request.app[API_KEY]
        allowed = False
        for method, pattern, handler in api.routes:
            match = pattern.match(rest)
            if match:
                if method == request.method:
                    return await handler(request, member, match)
                allowed = True
        if allowed:
            raise SimError(405, "MethodNotAllowed", f"{request.method} is not allowed on {rest}")
        raise SimError(404, "ConnectWiseApi", "The endpoint does not exist.")
    except SimError as exc:
        return error(request, exc)
    except ConditionError as exc:
        return error(request, SimError(400, "InvalidObject", f"conditions: {exc}"))


async def company_info(request: web.Request) -> web.Response:
    company = request.path.rstrip("/").rsplit("/", 1)[-1]
    if company.casefold() != fixture.LOGIN_COMPANY.casefold():
        return web.Response(body=b"null", content_type="application/json")
    return web.json_response({
        "CompanyName": "Demo MSP LLC", "Codebase": fixture.CODEBASE, "VersionCode": "v2025.1",
        "VersionNumber": "v2025.1.100001", "CompanyID": fixture.LOGIN_COMPANY, "IsCloud": False,
        "SiteUrl": request.host,
    })  # fmt: skip


async def callback_key(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.query.get("id") != state.callback_key_id:
        return error(request, SimError(404, "NotFound", "Callback key not found"))
    return web.json_response({"signing_key": state.signing_key})


API_KEY = web.AppKey("cw_sim_api", Api)


def build_app(state: SimState | None = None, faults: Faults | None = None) -> web.Application:
    """The simulator app; ``DISPATCHER_KEY`` sends callbacks once it listens."""
    from daemon.simulators.connectwise.admin import add_admin_routes

    app = web.Application(client_max_size=4 * 1024 * 1024)
    state = state or SimState()
    faults = faults or Faults()
    app[STATE_KEY] = state
    app[FAULTS_KEY] = faults
    app[API_KEY] = Api(state)
    app[DISPATCHER_KEY] = CallbackDispatcher(state, faults)

    async def dispatcher_ctx(app: web.Application) -> Any:
        await app[DISPATCHER_KEY].start()
        yield
        await app[DISPATCHER_KEY].stop()

    app.cleanup_ctx.append(dispatcher_ctx)
    add_admin_routes(app)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def set_public_url(app: web.Application, url: str | URL) -> None:
    """Tell the simulator where it listens (for key_url and FromUrl)."""
    app[DISPATCHER_KEY].base_url = str(URL(url).origin())


def _fault_body(status: int) -> dict[str, Any]:
    """An armed fault's error body, shaped as ConnectWise's for that status
    (../shared/reference/connectwise/NOTES.md, error bodies)."""
    if status == 429:
        return {"code": "TooManyRequests", "message": "simulated HTTP 429"}
    if status in (400, 422):
        return {"code": "InvalidObject", "message": "ticket object is invalid", "errors": [
            {"code": "InvalidField", "message": f"simulated validation rule (HTTP {status})",
             "resource": "ticket", "field": "summary"}]}  # fmt: skip
    if status == 403:
        return {"code": "Unauthorized", "message": "simulated HTTP 403: insufficient permissions"}
    if status == 404:
        return {"code": "NotFound", "message": "simulated HTTP 404: ticket not found"}
    return {"code": "ServerError", "message": f"simulated HTTP {status}"}
