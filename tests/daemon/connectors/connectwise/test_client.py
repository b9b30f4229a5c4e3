"""socbridge's ConnectWise client against the simulator over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from structlog.testing import capture_logs

from daemon.connectors.connectwise.client import (
    ConnectWiseClient,
    discover_codebase,
    next_link,
    note_section,
    patch_operations,
)
from daemon.connectors.connectwise.errors import (
    AuthenticationError,
    BadRequestError,
    CodebaseNotFoundError,
    NotFoundError,
    ObjectExistsError,
    PermissionDeniedError,
)
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.simulators.connectwise import SimServer, fixture
from tests.support.connectwise import write_secret

ACME = {"id": 250}


async def new_ticket(
    cw: ConnectWiseClient, summary: str = "Suspicious login", **kw: object
) -> dict:
    body = {"summary": summary, "company": ACME, "board": {"id": fixture.BOARD_ID}, **kw}
    return await cw.create_ticket(body)


async def test_codebase_is_discovered(sim: SimServer, http: aiohttp.ClientSession) -> None:
    assert await discover_codebase(http, sim.url, fixture.LOGIN_COMPANY) == fixture.CODEBASE
    with pytest.raises(CodebaseNotFoundError, match="nosuch"):
        await discover_codebase(http, sim.url, "nosuch")


async def test_request_carries_auth_client_id_and_pinned_version(cw: ConnectWiseClient) -> None:
    resp = await cw.remote.request("GET", "system/info")
    assert resp.headers["Content-Type"].startswith(
        "application/vnd.connectwise.com+json; version=2025.16"
    )
    assert resp.json()["version"].startswith("v")


async def test_bad_keys_give_authentication_error_without_the_key(
    make_settings: Callable[..., ConnectWiseSettings], http: aiohttp.ClientSession, tmp_path
) -> None:
    settings = make_settings(private_key=write_secret(tmp_path / "wrong", "WrongPrivateKey77"))
    cw = await ConnectWiseClient.connect(settings, settings.load_keys(), http)
    with pytest.raises(AuthenticationError) as ei:
        await cw.get_ticket(1)
    assert ei.value.status == 401
    assert "WrongPrivateKey77" not in str(ei.value) and "WrongPrivateKey77" not in repr(cw)
    assert fixture.API_PUBLIC_KEY not in repr(cw)


async def test_create_get_and_patch_only_changed_fields(cw: ConnectWiseClient) -> None:
    created = await new_ticket(cw, initialDescription="First note", source={"name": "SOC Platform"})
    assert created["status"]["name"] == "New" and created["company"]["identifier"] == "AcmeCorp"
    assert created["source"]["name"] == "SOC Platform"
    current = await cw.get_ticket(created["id"])
    ops = patch_operations(current, {"summary": current["summary"], "status": {"id": 411}})
    assert ops == [{"op": "replace", "path": "/status", "value": {"id": 411}}]
    updated = await cw.update_ticket(created["id"], {"status": {"id": 411}}, current)
    assert updated is not None and updated["status"]["name"] == "Send to SOC"
    assert await cw.update_ticket(created["id"], {"status": {"id": 411}}, updated) is None


async def test_patch_path_without_leading_slash_and_nested(cw: ConnectWiseClient) -> None:
    t = await new_ticket(cw)
    out = await cw.patch(f"service/tickets/{t['id']}", [
        {"op": "replace", "path": "summary", "value": "Renamed"},
        {"op": "replace", "path": "/priority/id", "value": 1},
    ])  # fmt: skip
    assert out["summary"] == "Renamed" and out["priority"]["name"].startswith("Priority 1")


async def test_errors_are_typed_and_keep_code_and_field(cw: ConnectWiseClient) -> None:
    with pytest.raises(NotFoundError) as nf:
        await cw.get_ticket(999999)
    assert nf.value.code == "NotFound"
    with pytest.raises(BadRequestError) as br:
        await cw.create_ticket({"summary": "x" * 101, "company": ACME})
    assert br.value.code == "InvalidObject" and br.value.fields == ("summary",)
    with pytest.raises(BadRequestError) as st:
        await new_ticket(cw, status={"id": 12})  # a Help Desk status on the SOC board
    assert st.value.fields == ("status",)


async def test_notes_need_exactly_one_section(cw: ConnectWiseClient) -> None:
    t = await new_ticket(cw)
    note = await cw.create_note(t["id"], "Analyst reply", "Internal Analysis")
    assert note_section(note) == "Internal Analysis"
    assert (note["detailDescriptionFlag"], note["resolutionFlag"]) == (False, False)
    notes = await cw.list_notes(t["id"])
    assert [n["text"] for n in notes] == ["Analyst reply"]
    with pytest.raises(ValueError):
        await cw.create_note(t["id"], "x", "Nonsense")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError):
        await cw.post(f"service/tickets/{t['id']}/notes", {"text": "no section"})


async def test_list_pages_to_the_end_with_conditions_order_and_fields(
    cw: ConnectWiseClient,
) -> None:
    for i in range(7):
        await new_ticket(cw, f"Alert {i}")
    await cw.create_ticket({"summary": "Other", "company": {"id": 251}})
    seen = [
        t async for t in cw.iter_tickets(
            conditions="company/id = 250 and summary like 'Alert%'",
            order_by="id desc", fields="id,summary", page_size=3,
        )
    ]  # fmt: skip
    assert [t["summary"] for t in seen] == [f"Alert {i}" for i in reversed(range(7))]
    assert all(set(t) == {"id", "summary"} for t in seen)
    assert await cw.count("service/tickets", "company/id = 251") == 1


async def test_reference_lists(cw: ConnectWiseClient) -> None:
    boards = await cw.boards()
    assert {b["name"] for b in boards} == {"SOC Incidents", "Help Desk"}
    statuses = await cw.board_statuses(fixture.BOARD_ID)
    assert [s["name"] for s in statuses][:2] == ["New", "Send to SOC"]
    assert len(await cw.priorities()) == 4 and len(await cw.sources()) == 3
    assert [c["identifier"] for c in await cw.companies("id in (250, 251)")] == [
        "AcmeCorp",
        "Globex",
    ]
    member = (await cw.members(f"identifier = '{fixture.API_MEMBER}'"))[0]
    settings = await cw.security_role_settings(member["securityRole"]["id"])
    assert {s["moduleFunctionName"] for s in settings} >= {"Service Tickets", "Table Setup"}


async def test_missing_permission_is_403(sim: SimServer, cw: ConnectWiseClient) -> None:
    del sim.state.roles[31].permissions[("Service Desk", "Service Tickets")]
    with pytest.raises(PermissionDeniedError) as ei:
        await cw.get_ticket(1)
    assert "Service Tickets" in str(ei.value)


async def test_callbacks_crud_and_duplicate_is_object_exists(cw: ConnectWiseClient) -> None:
    entry = {"url": "https://example.test/cb", "objectId": 41, "type": "ticket", "level": "board"}
    created = await cw.create_callback(entry)
    with pytest.raises(ObjectExistsError) as ei:
        await cw.create_callback(entry)
    assert ei.value.errors[0].code == "ObjectExists"
    assert [c["id"] for c in await cw.callbacks()] == [created["id"]]
    await cw.delete_callback(created["id"])
    assert await cw.callbacks() == []


async def test_survives_429_storm_and_5xx_burst_without_losing_a_write(
    sim: SimServer, cw: ConnectWiseClient
) -> None:
    t = await new_ticket(cw)
    sim.faults.update({"api": [
        {"status": 429, "count": 4, "retry_after": "0"},
        {"status": 500, "count": 2, "method": "PATCH"},
        {"status": 502, "count": 1, "method": "PATCH"},
    ]})  # fmt: skip
    with capture_logs() as logs:
        results = await asyncio.gather(
            *(cw.update_ticket(t["id"], {"summary": f"v{i}"}) for i in range(3)),
            cw.create_note(t["id"], "reply during storm", "Discussion"),
        )
    assert len(logs) >= 7  # every injected failure was retried, and logged
    secrets = (fixture.API_PRIVATE_KEY, fixture.API_PUBLIC_KEY)
    assert not any(s in repr(entry) for entry in logs for s in secrets)
    assert all(r is not None for r in results)
    assert sim.faults.api == []  # every injected failure was consumed and survived
    assert len(sim.state.notes[t["id"]]) == 1  # the note was written exactly once
    assert (await cw.get_ticket(t["id"]))["summary"] in {"v0", "v1", "v2"}


async def test_post_is_not_retried_after_an_ambiguous_500(
    sim: SimServer, cw: ConnectWiseClient
) -> None:
    from daemon.connectors.connectwise.errors import ServerError

    sim.faults.update({"api": [{"status": 500, "count": 1, "method": "POST"}]})
    with pytest.raises(ServerError):
        await new_ticket(cw)
    assert sim.state.tickets == {}


def test_helpers() -> None:
    assert next_link('<https://h/x?page=2>; rel="next", <https://h/x?page=9>; rel="last"') == (
        "https://h/x?page=2"
    )
    assert next_link('<https://h/x?page=9>; rel="last"') is None
    assert patch_operations({"owner": {"id": 1, "name": "a"}}, {"owner": {"id": 1}}) == []


async def test_link_to_another_origin_is_not_followed(
    http: aiohttp.ClientSession, settings: ConnectWiseSettings
) -> None:
    """Credentials must never follow a Link header off the ConnectWise site."""
    from aiohttp import web

    seen: list[tuple[str, str | None]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization")))
        return web.json_response([])

    async def api(request: web.Request) -> web.Response:
        seen.append((request.path, None))
        page = int(request.query["page"])
        body = [{"id": page}] if page <= 2 else []
        return web.json_response(body, headers={"Link": f'<{evil}/steal?page=2>; rel="next"'})

    other, site = web.Application(), web.Application()
    other.router.add_get("/steal", elsewhere)
    site.router.add_get("/{tail:.*}", api)
    runners = [web.AppRunner(other), web.AppRunner(site)]
    for r in runners:
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", 0).start()
    evil = f"http://127.0.0.1:{runners[0].addresses[0][1]}"
    base = f"http://127.0.0.1:{runners[1].addresses[0][1]}"
    cw = await ConnectWiseClient.connect(
        settings.model_copy(update={"site_url": base, "codebase": "v2025_1/"}),
        settings.load_keys(), http,
    )  # fmt: skip
    try:
        items = await cw.list_all("service/tickets", page_size=1)
    finally:
        for r in runners:
            await r.cleanup()
    assert [i["id"] for i in items] == [1, 2]
    assert all(path != "/steal" for path, _ in seen)


async def test_status_by_name_resolves_on_the_tickets_board(cw: ConnectWiseClient) -> None:
    # "New" exists on both boards; a Help Desk ticket's "New" is the Help Desk one.
    t = await cw.create_ticket({"summary": "HD", "company": ACME, "board": {"id": 1}})
    await cw.update_ticket(t["id"], {"status": {"name": "Closed"}})
    back = await cw.update_ticket(t["id"], {"status": {"name": "New"}})
    assert back is not None and back["status"]["id"] == 11
