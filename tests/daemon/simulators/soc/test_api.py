"""The SOC simulator over raw HTTP: envelopes, rules and error bodies as NOTES.md gives them."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from daemon.simulators.soc import SocSimulator, fixture

NOT_FOUND = {"error": "RecordNotFound", "description": "Not found"}  # NOTES §4.1 (OAS)


def auth(email: str = fixture.API_EMAIL, token: str = fixture.API_TOKEN) -> dict[str, str]:
    raw = base64.b64encode(f"{email}/token:{token}".encode()).decode()
    return {"Authorization": f"Basic {raw}", "Accept": "application/json"}


async def call(
    http: aiohttp.ClientSession,
    sim: SocSimulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[int, Any, Any]:
    h = {**auth(), **(headers or {})}
    async with http.request(method, sim.url + path, json=body, headers=h, **kw) as r:
        doc = await r.json(content_type=None) if r.status != 204 else None
        return r.status, doc, r.headers


async def new_ticket(
    http: aiohttp.ClientSession, sim: SocSimulator, **fields: Any
) -> dict[str, Any]:
    ticket = {
        "subject": "Suspicious login",
        "comment": {"body": "Impossible travel for jdoe", "public": False},
        "priority": "high",
        "organization_id": 9001,
        "external_id": "cw:1001",
        **fields,
    }
    status, doc, headers = await call(http, sim, "POST", "/api/v2/tickets.json", {"ticket": ticket})
    assert status == 201, doc
    assert headers["Location"] == doc["ticket"]["url"]
    return doc["ticket"]


async def test_create_returns_the_ticket_envelope_with_description_as_first_comment(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    t = await new_ticket(http, sim)
    assert t["id"] == fixture.FIRST_TICKET_ID
    assert (t["status"], t["priority"], t["external_id"], t["organization_id"]) == (
        "new",
        "high",
        "cw:1001",
        9001,
    )
    assert t["description"] == "Impossible travel for jdoe"
    assert t["requester_id"] == fixture.API_USER_ID
    status, doc, _ = await call(http, sim, "GET", f"/api/v2/tickets/{t['id']}/comments.json")
    assert status == 200
    assert [c["body"] for c in doc["comments"]] == ["Impossible travel for jdoe"]
    assert doc["comments"][0]["public"] is False
    assert doc["count"] == 1 and doc["next_page"] is None


async def test_create_answers_201_with_the_ticket_and_its_creation_audit(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    ticket = {
        "subject": "Suspicious login",
        "comment": {"body": "Impossible travel for jdoe", "public": False},
        "priority": "high",
        "organization_id": 9001,
        "external_id": "cw:1001",
        "tags": ["soc"],
    }
    status, doc, headers = await call(http, sim, "POST", "/api/v2/tickets", {"ticket": ticket})
    assert status == 201 and set(doc) == {"ticket", "audit"}
    t, audit = doc["ticket"], doc["audit"]
    assert headers["Location"] == t["url"]
    assert (audit["ticket_id"], audit["author_id"]) == (t["id"], fixture.API_USER_ID)
    events = audit["events"]
    # The OAS TicketUpdateResponseExample order: subject, Comment, status,
    # custom_status_id; then the other fields that hold a value (NOTES §2.2, §2.4).
    assert [(e["type"], e.get("field_name"), e.get("value")) for e in events] == [
        ("Create", "subject", "Suspicious login"),
        ("Comment", None, None),
        ("Create", "status", "new"),
        ("Create", "custom_status_id", t["custom_status_id"]),
        ("Create", "priority", "high"),
        ("Create", "external_id", "cw:1001"),
        ("Create", "organization_id", 9001),
        ("Create", "tags", ["soc"]),
        ("Create", "requester_id", fixture.API_USER_ID),
    ]
    comment = events[1]
    assert (comment["body"], comment["public"], comment["attachments"]) == (
        "Impossible travel for jdoe", False, [],
    )  # fmt: skip
    assert comment["html_body"].endswith("<p>Impossible travel for jdoe</p></div>")
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and audit["id"] < ids[0]
    _, comments, _ = await call(http, sim, "GET", f"/api/v2/tickets/{t['id']}/comments")
    assert comments["comments"][0]["id"] == comment["id"]
    assert comments["comments"][0]["audit_id"] == audit["id"]
    _, audits, _ = await call(http, sim, "GET", f"/api/v2/tickets/{t['id']}/audits")
    assert audits["audits"] == [audit]


async def test_create_takes_description_as_the_first_comment_without_a_comment(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    body = {"ticket": {"subject": "Phishing", "description": "User clicked a link"}}
    status, doc, _ = await call(http, sim, "POST", "/api/v2/tickets.json", body)
    assert status == 201
    assert doc["ticket"]["description"] == "User clicked a link"
    assert ("Comment", "User clicked a link", True) in [
        (e["type"], e.get("body"), e.get("public")) for e in doc["audit"]["events"]
    ]
    _, comments, _ = await call(http, sim, "GET", f"/api/v2/tickets/{doc['ticket']['id']}/comments")
    assert [(c["body"], c["public"]) for c in comments["comments"]] == [
        ("User clicked a link", True)
    ]


async def test_create_with_comment_and_description_takes_the_comment(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    # The reference is silent on a create sending both; comment is the documented
    # input (OAS TicketObject.description), so it wins (tickets.py _first_comment).
    ticket = {
        "subject": "Both",
        "comment": {"body": "from comment", "public": False},
        "description": "from description",
    }
    status, doc, _ = await call(http, sim, "POST", "/api/v2/tickets", {"ticket": ticket})
    assert status == 201 and doc["ticket"]["description"] == "from comment"
    _, comments, _ = await call(http, sim, "GET", f"/api/v2/tickets/{doc['ticket']['id']}/comments")
    assert [c["body"] for c in comments["comments"]] == ["from comment"]


@pytest.mark.parametrize(
    "ticket",
    [
        {"subject": "x"},
        {"subject": "x", "description": ""},
        {"subject": "x", "description": "   "},
        {"subject": "x", "comment": {"body": ""}, "description": "ignored: comment wins"},
    ],
)
async def test_create_without_a_comment_or_description_is_refused(
    sim: SocSimulator, http: aiohttp.ClientSession, ticket: dict[str, Any]
) -> None:
    status, doc, _ = await call(http, sim, "POST", "/api/v2/tickets", {"ticket": ticket})
    assert (status, doc) == (
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {
                "description": [
                    {"description": "Description: cannot be blank", "error": "BlankValue"}
                ]
            },
        },
    )
    assert sim.state.tickets == {}


async def test_paths_work_with_and_without_json_suffix(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    t = await new_ticket(http, sim)
    for path in (f"/api/v2/tickets/{t['id']}", f"/api/v2/tickets/{t['id']}.json"):
        status, doc, _ = await call(http, sim, "GET", path)
        assert status == 200 and doc["ticket"]["id"] == t["id"]


async def test_update_returns_ticket_and_audit_and_adds_a_comment(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    t = await new_ticket(http, sim)
    body = {"ticket": {"status": "open", "comment": {"body": "Looking into it"}}}
    status, doc, _ = await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}.json", body)
    assert status == 200
    assert doc["ticket"]["status"] == "open"
    kinds = [(e["type"], e.get("field_name")) for e in doc["audit"]["events"]]
    assert ("Change", "status") in kinds and ("Comment", None) in kinds
    change = next(e for e in doc["audit"]["events"] if e["type"] == "Change")
    assert (change["previous_value"], change["value"]) == ("new", "open")
    # The first comment was private, so later comments default to private (§2.3).
    _, comments, _ = await call(http, sim, "GET", f"/api/v2/tickets/{t['id']}/comments")
    assert [c["public"] for c in comments["comments"]] == [False, False]


async def test_update_without_changes_keeps_updated_at(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    t = await new_ticket(http, sim)
    _, doc, _ = await call(
        http, sim, "PUT", f"/api/v2/tickets/{t['id']}", {"ticket": {"priority": "high"}}
    )
    assert doc["ticket"]["updated_at"] == t["updated_at"]


async def test_closed_is_final(sim: SocSimulator, http: aiohttp.ClientSession) -> None:
    t = await new_ticket(http, sim)
    await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}", {"ticket": {"status": "closed"}})
    status, doc, _ = await call(
        http, sim, "PUT", f"/api/v2/tickets/{t['id']}", {"ticket": {"status": "open"}}
    )
    assert status == 422
    assert doc == {
        "error": "RecordInvalid",
        "description": "Record validation errors",
        "details": {"status": [{"description": "Status: closed prevents ticket update"}]},
    }
    _, again, _ = await call(http, sim, "GET", f"/api/v2/tickets/{t['id']}")
    assert again["ticket"]["status"] == "closed"


async def test_solved_can_be_reopened(sim: SocSimulator, http: aiohttp.ClientSession) -> None:
    t = await new_ticket(http, sim)
    await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}", {"ticket": {"status": "solved"}})
    status, doc, _ = await call(
        http, sim, "PUT", f"/api/v2/tickets/{t['id']}", {"ticket": {"status": "open"}}
    )
    assert status == 200 and doc["ticket"]["status"] == "open"


async def test_safe_update_with_stale_stamp_is_409_and_changes_nothing(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    t = await new_ticket(http, sim)
    stale = t["updated_at"]
    await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}", {"ticket": {"priority": "low"}})
    body = {"ticket": {"status": "solved", "safe_update": True, "updated_stamp": stale}}
    status, doc, _ = await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}", body)
    assert status == 409 and doc["error"] == "UpdateConflict"
    _, cur, _ = await call(http, sim, "GET", f"/api/v2/tickets/{t['id']}")
    assert cur["ticket"]["status"] == "new"
    # With the current stamp it goes through; safe_update false is unsafe (§2.5).
    body["ticket"]["updated_stamp"] = cur["ticket"]["updated_at"]
    status, doc, _ = await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}", body)
    assert status == 200 and doc["ticket"]["status"] == "solved"
    unsafe = {"ticket": {"status": "open", "safe_update": False, "updated_stamp": stale}}
    status, _, _ = await call(http, sim, "PUT", f"/api/v2/tickets/{t['id']}", unsafe)
    assert status == 200


async def test_idempotency_key_replays_and_refuses_other_parameters(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    body = {"ticket": {"subject": "x", "comment": {"body": "y"}, "organization_id": 9001}}
    key = {"Idempotency-Key": "cw-ticket-1001"}
    s1, d1, h1 = await call(http, sim, "POST", "/api/v2/tickets", body, key)
    s2, d2, h2 = await call(http, sim, "POST", "/api/v2/tickets", body, key)
    assert (s1, h1["x-idempotency-lookup"]) == (201, "miss")
    assert (s2, h2["x-idempotency-lookup"]) == (201, "hit")
    assert d1 == d2  # the replay repeats the original body, audit included
    assert d1["audit"]["ticket_id"] == d1["ticket"]["id"] and d1["audit"]["events"]
    assert h2["Location"] == d1["ticket"]["url"]
    assert len(sim.state.tickets) == 1
    other = {"ticket": {**body["ticket"], "subject": "different"}}
    s3, d3, _ = await call(http, sim, "POST", "/api/v2/tickets", other, key)
    assert s3 == 400 and d3["error"] == "IdempotentRequestError"
    assert len(sim.state.tickets) == 1


async def test_errors_401_403_404_422_exactly(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    status, doc, _ = await call(
        http, sim, "GET", "/api/v2/tickets.json", headers=auth(token="wrong")
    )
    assert status == 401 and doc == {"error": "Couldn't authenticate you"}
    status, doc, _ = await call(
        http,
        sim,
        "GET",
        "/api/v2/tickets.json",
        headers=auth(fixture.END_USER_EMAIL, fixture.END_USER_TOKEN),
    )
    assert status == 403 and doc["error"] == "Forbidden"
    status, doc, _ = await call(
        http,
        sim,
        "GET",
        "/api/v2/webhooks",
        headers=auth(fixture.ANALYST_EMAIL, fixture.ANALYST_TOKEN),
    )
    assert status == 403  # webhooks are admin-only
    status, doc, _ = await call(http, sim, "GET", "/api/v2/tickets/1.json")
    assert (status, doc) == (404, NOT_FOUND)
    status, doc, _ = await call(
        http,
        sim,
        "POST",
        "/api/v2/tickets",
        {"ticket": {"subject": "x", "comment": {"body": "y"}, "priority": "critical"}},
    )
    assert status == 422 and doc["error"] == "RecordInvalid" and "priority" in doc["details"]
    status, doc, _ = await call(http, sim, "POST", "/api/v2/tickets", {"ticket": {"subject": "x"}})
    assert status == 422 and "description" in doc["details"]
    assert sim.state.tickets == {}


async def test_429_carries_retry_after_and_rate_limit_headers(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    sim.faults.update({"rate_limit_next": 1, "retry_after": 7})
    status, doc, headers = await call(http, sim, "GET", "/api/v2/tickets")
    assert status == 429 and headers["Retry-After"] == "7"
    assert doc["errors"][0]["code"] == "TooManyRequests"
    status, _, headers = await call(http, sim, "GET", "/api/v2/tickets")
    assert status == 200 and "X-Rate-Limit-Remaining" in headers


async def test_real_per_minute_budget_runs_out(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    sim.faults.update({"rate_limit_per_minute": 3})
    statuses = [(await call(http, sim, "GET", "/api/v2/users/me"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_offset_and_cursor_paging(sim: SocSimulator, http: aiohttp.ClientSession) -> None:
    for i in range(5):
        await new_ticket(http, sim, external_id=f"cw:{i}")
    status, doc, _ = await call(http, sim, "GET", "/api/v2/tickets.json?per_page=2")
    assert status == 200 and doc["count"] == 5 and len(doc["tickets"]) == 2
    assert doc["next_page"] and doc["previous_page"] is None
    async with http.get(doc["next_page"], headers=auth()) as r:
        page2 = await r.json()
    assert [t["external_id"] for t in page2["tickets"]] == ["cw:2", "cw:3"]
    status, doc, _ = await call(http, sim, "GET", "/api/v2/tickets.json?page[size]=3")
    assert doc["meta"]["has_more"] is True and len(doc["tickets"]) == 3
    async with http.get(doc["links"]["next"], headers=auth()) as r:
        rest = await r.json()
    assert [t["external_id"] for t in rest["tickets"]] == ["cw:3", "cw:4"]
    assert rest["meta"]["has_more"] is False and rest["links"]["next"] is None
    _, found, _ = await call(http, sim, "GET", "/api/v2/tickets.json?external_id=cw:3")
    assert [t["external_id"] for t in found["tickets"]] == ["cw:3"]


async def test_organizations_and_users_match_the_fixture(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    _, doc, _ = await call(http, sim, "GET", "/api/v2/organizations.json")
    assert {o["id"]: o["name"] for o in doc["organizations"]} == {
        9001: "ACME Corporation",
        9002: "Globex Inc",
        9003: "Initech LLC",
    }
    _, me, _ = await call(http, sim, "GET", "/api/v2/users/me.json")
    assert me["user"]["id"] == fixture.API_USER_ID and me["user"]["role"] == "admin"


async def test_incremental_export_follows_changes_with_a_cursor(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    a = await new_ticket(http, sim)
    b = await new_ticket(http, sim)
    _, doc, _ = await call(http, sim, "GET", "/api/v2/incremental/tickets/cursor.json?start_time=0")
    assert [t["id"] for t in doc["tickets"]] == [a["id"], b["id"]]
    assert doc["end_of_stream"] is True and doc["after_url"].startswith(sim.url)
    await call(http, sim, "PUT", f"/api/v2/tickets/{a['id']}", {"ticket": {"status": "open"}})
    async with http.get(doc["after_url"], headers=auth()) as r:
        nxt = await r.json()
    assert [t["id"] for t in nxt["tickets"]] == [a["id"]]
    assert nxt["tickets"][0]["status"] == "open"


async def test_incremental_export_holds_back_the_most_recent_changes(
    http: aiohttp.ClientSession,
) -> None:
    async with SocSimulator(export_lag=60) as lagging:
        await new_ticket(http, lagging)
        _, doc, _ = await call(
            http, lagging, "GET", "/api/v2/incremental/tickets/cursor.json?start_time=0"
        )
        assert doc["tickets"] == [] and doc["end_of_stream"] is True


async def test_webhook_crud_and_signing_secret(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    spec = {
        "name": "socbridge",
        "endpoint": "https://bridge.example/webhooks/soc",
        "http_method": "POST",
        "request_format": "json",
        "status": "active",
        "subscriptions": ["zen:event-type:ticket.status_changed"],
    }
    status, doc, _ = await call(http, sim, "POST", "/api/v2/webhooks", {"webhook": spec})
    assert status == 201
    wid = doc["webhook"]["id"]
    assert len(wid) == 26 and "secret" not in str(doc)
    _, sec, _ = await call(http, sim, "GET", f"/api/v2/webhooks/{wid}/signing_secret")
    assert sec["signing_secret"]["algorithm"] == "SHA256" and sec["signing_secret"]["secret"]
    _, rotated, _ = await call(http, sim, "POST", f"/api/v2/webhooks/{wid}/signing_secret")
    assert rotated["signing_secret"]["secret"] != sec["signing_secret"]["secret"]
    status, _, _ = await call(
        http, sim, "PATCH", f"/api/v2/webhooks/{wid}", {"webhook": {"status": "inactive"}}
    )
    assert status == 204
    _, shown, _ = await call(http, sim, "GET", f"/api/v2/webhooks/{wid}")
    assert shown["webhook"]["status"] == "inactive"
    bad = {"webhook": {**spec, "subscriptions": ["zen:event-type:ticket.exploded"]}}
    status, doc, _ = await call(http, sim, "POST", "/api/v2/webhooks", bad)
    assert status == 400 and doc["errors"][0]["code"] == "InvalidValue"
    status, _, _ = await call(http, sim, "DELETE", f"/api/v2/webhooks/{wid}")
    assert status == 204
    status, _, _ = await call(http, sim, "GET", f"/api/v2/webhooks/{wid}")
    assert status == 404


async def test_fault_admin_endpoint_sets_and_validates_knobs(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.patch(
        f"{sim.url}/_sim/faults", json={"error_next": 1, "error_status": 502}
    ) as r:
        assert r.status == 200 and (await r.json())["error_next"] == 1
    status, _, _ = await call(http, sim, "GET", "/api/v2/users/me")
    assert status == 502
    status, _, _ = await call(http, sim, "GET", "/api/v2/users/me")
    assert status == 200
    async with http.patch(f"{sim.url}/_sim/faults", json={"latency": -1}) as r:
        assert r.status == 400
    async with http.patch(f"{sim.url}/_sim/faults", json={"no_such_knob": 1}) as r:
        assert r.status == 400
    async with http.get(f"{sim.url}/_sim/faults") as r:
        assert (await r.json())["latency"] == 0


@pytest.mark.parametrize("latency", [0.3])
async def test_latency_knob_delays_api_requests(
    sim: SocSimulator, http: aiohttp.ClientSession, latency: float
) -> None:
    import time

    sim.faults.update({"latency": latency})
    started = time.monotonic()
    status, _, _ = await call(http, sim, "GET", "/api/v2/users/me")
    assert status == 200 and time.monotonic() - started >= latency


async def test_show_many_answers_the_tickets_asked_for_in_the_single_ticket_shape(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    first, second = await new_ticket(http, sim), await new_ticket(http, sim, priority="low")
    ids = f"{second['id']},424242,{first['id']}"  # 424242: no such ticket, left out
    for path in ("/api/v2/tickets/show_many", "/api/v2/tickets/show_many.json"):
        status, doc, _ = await call(http, sim, "GET", path, params={"ids": ids})
        assert status == 200 and list(doc) == ["tickets"]
        assert [t["id"] for t in doc["tickets"]] == [second["id"], first["id"]]
    _, one, _ = await call(http, sim, "GET", f"/api/v2/tickets/{first['id']}.json")
    assert doc["tickets"][1] == one["ticket"]


async def test_show_many_answers_the_first_100_ids_only(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    first, second = await new_ticket(http, sim), await new_ticket(http, sim)
    # 99 ids of no ticket, then the two tickets: the 100th id is answered, the 101st is not.
    ids = [str(900000 + n) for n in range(99)] + [str(first["id"]), str(second["id"])]
    status, doc, _ = await call(
        http, sim, "GET", "/api/v2/tickets/show_many.json", params={"ids": ",".join(ids)}
    )
    assert status == 200 and [t["id"] for t in doc["tickets"]] == [first["id"]]


async def test_show_many_needs_ids_and_counts_against_the_rate_limit(
    sim: SocSimulator, http: aiohttp.ClientSession
) -> None:
    t = await new_ticket(http, sim)
    for query in ({}, {"ids": "1,two"}):
        status, doc, _ = await call(http, sim, "GET", "/api/v2/tickets/show_many", params=query)
        assert status == 400, doc
    sim.faults.update({"rate_limit_per_minute": 1})
    show = {"ids": str(t["id"])}
    statuses = [
        (await call(http, sim, "GET", "/api/v2/tickets/show_many", params=show))[0]
        for _ in range(2)
    ]
    assert statuses == [200, 429]
