"""The connector contract, written once and run against every desk's simulator.

Each desk plugs in one :class:`Bench` (its simulator, a client of it, the daemon's
desk adapter, intake and poller over a real event log, and the command
parameters sync would issue for it); every test below then runs for each desk.
A third desk gets these tests by adding a ``_bench`` branch.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.connectors import contract
from daemon.connectors.connectwise import client as cw_client
from daemon.connectors.connectwise import install as cw_install
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.connectwise.poller import ConnectWisePoller
from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.connectors.polling import BasePoller
from daemon.connectors.soc import client as soc_client
from daemon.connectors.soc import install as soc_install
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.desk import SocDesk
from daemon.connectors.soc.intake import WebhookIntake
from daemon.connectors.soc.poller import SocPoller
from daemon.connectors.soc.settings import SocSettings
from daemon.outbox.fetch import fetch_ticket
from daemon.simulators.connectwise import SimServer
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.soc import SocSimulator
from eventstore import EventStore, utc_now
from projections import kinds
from projections.state import JsonObject, Link, PendingCommand, Side
from tests.support.connectwise import callback_intake
from tests.support.soc import make_settings as soc_settings

CW_PRIORITIES = {
    "urgent": "Priority 1 - Emergency Response",
    "high": "Priority 2 - Quick Response",
    "normal": "Priority 3 - Normal Response",
    "low": "Priority 4 - Schedule Maintenance",
}
NORMALIZE: dict[Side, JsonObject] = {
    "cw": {
        "solved_status": "Solved",
        "priority_mapping": dict(CW_PRIORITIES),
        "default_soc_priority": "normal",
    },
    "soc": {},
}


@dataclass
class Bench:
    """One desk under test: its simulator, and the daemon's parts that speak to it."""

    side: Side
    desk: contract.Desk
    intake: contract.Intake
    poller: BasePoller
    store: EventStore
    #: Makes the simulator answer the next ``n`` API requests with ``status``.
    fail_next: Callable[[int, int], None]
    #: Waits until the simulator has sent every callback or webhook it queued.
    delivered: Callable[[], Awaitable[None]]
    #: HTTP requests the desk's client has sent so far.
    requests: Callable[[], int]
    #: Ticket ids one request of :meth:`~contract.Desk.read_tickets` names at most.
    ids_per_read: int

    def create_params(self, marker: int, priority: str = "high") -> JsonObject:
        """A ``{side}.create_ticket`` command's parameters, as sync issues them."""
        if self.side == "cw":
            return {
                "company_id": 250, "board": "SOC Incidents", "summary": f"Incident {marker}",
                "priority": CW_PRIORITIES[priority], "source": "SOC Platform",
                "external_ref": f"socbridge:soc:{marker}",
            }  # fmt: skip
        return {
            "organization_id": 9001, "subject": f"Incident {marker}",
            "body": f"Incident {marker}\n\n[socbridge: ConnectWise ticket {marker}]",
            "priority": priority, "status": "open", "external_id": f"socbridge:cw:{marker}",
        }  # fmt: skip

    def note_params(self, key: str, text: str) -> JsonObject:
        if self.side == "cw":
            return {"note_key": key, "text": text, "section": "Discussion"}
        return {"note_key": key, "body": text, "public": True}

    def remote_priority(self, priority: str) -> dict[str, str]:
        return {"priority": CW_PRIORITIES[priority] if self.side == "cw" else priority}

    def command(self, kind: str, params: JsonObject | None = None) -> PendingCommand:
        return PendingCommand(
            f"c-{kind}", f"{self.side}.{kind}", "l-1", "acme", params or {}, issued_at=1
        )


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secret(path: Path, value: str) -> str:
    path.write_text(value)
    os.chmod(path, 0o600)
    return str(path)


async def _serve(stack: AsyncExitStack, intake: contract.Intake, port: int) -> None:
    app = web.Application()
    app.router.add_post(intake.path, intake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", port).start()


async def _cw_bench(stack: AsyncExitStack, tmp: Path, store: EventStore) -> Bench:
    sim = await stack.enter_async_context(SimServer())
    http = await stack.enter_async_context(aiohttp.ClientSession())
    port = _port()
    settings = ConnectWiseSettings.model_validate({
        "site_url": sim.url, "company_id": cwfx.LOGIN_COMPANY,
        "public_key": _secret(tmp / "pub", cwfx.API_PUBLIC_KEY),
        "private_key": _secret(tmp / "priv", cwfx.API_PRIVATE_KEY),
        "client_id": cwfx.CLIENT_ID, "api_member": cwfx.API_MEMBER,
        "public_callback_url": f"http://127.0.0.1:{port}/callbacks/connectwise",
        "requests_per_second": 200, "max_attempts": 2, "max_retry_delay_seconds": 0.01,
        "poll_initial_lookback_hours": 1,
    })  # fmt: skip
    client = await ConnectWiseClient.connect(settings, settings.load_keys(), http)
    poller = ConnectWisePoller(store, client, settings, {250: "acme"})
    intake = callback_intake(store, settings, {250: "acme"}, http, kick=poller.kick)
    await _serve(stack, intake, port)
    await cw_install.install(client, settings)

    def fail_next(status: int, n: int) -> None:
        sim.faults.api.append(ApiFault(status, count=n))

    return Bench("cw", ConnectWiseDesk(client), intake, poller, store, fail_next,
                 sim.callbacks.drain, lambda: client.remote.attempts_made,
                 cw_client.IDS_PER_READ)  # fmt: skip


async def _soc_bench(stack: AsyncExitStack, tmp: Path, store: EventStore) -> Bench:
    sim = await stack.enter_async_context(SocSimulator(export_lag=0, webhook_retry_delay=0.01))
    port = _port()
    settings: SocSettings = soc_settings(
        sim.url, tmp, f"http://127.0.0.1:{port}/webhooks/soc", max_attempts=2
    )
    client = await stack.enter_async_context(
        SocClient.from_settings(settings, settings.load_token())
    )
    poller = SocPoller(store, client, settings, {9001: "acme"}, utc_now)
    intake = WebhookIntake(store, settings, {9001: "acme"}, utc_now, kick=poller.kick)
    await _serve(stack, intake, port)
    await soc_install.install(client, settings)

    def fail_next(status: int, n: int) -> None:
        sim.faults.update({"error_next": n, "error_status": status})

    async def delivered() -> None:
        await sim.dispatcher.drain()

    return Bench("soc", SocDesk(client), intake, poller, store, fail_next, delivered,
                 lambda: client.remote.attempts_made, soc_client.SHOW_MANY_MAX)  # fmt: skip


@pytest.fixture(params=["cw", "soc"])
async def bench(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bench]:
    async with AsyncExitStack() as stack:
        store = await EventStore.open(tmp_path / "events.db")
        stack.push_async_callback(store.close)
        make = _cw_bench if request.param == "cw" else _soc_bench
        yield await make(stack, tmp_path, store)


async def _created(b: Bench, marker: int, priority: str = "high") -> int:
    return await b.desk.create_ticket(
        b.create_params(marker, priority), idempotency_key=f"k{marker}"
    )


# --------------------------------------------------------------------- the desk


async def test_a_created_ticket_reads_back_with_its_values_and_is_found_by_its_marker(
    bench: Bench,
) -> None:
    assert await bench.desk.find_by_marker(bench.create_params(4001)) is None
    ticket_id = await _created(bench, 4001, "high")
    ticket = await bench.desk.read_ticket(ticket_id)
    values = bench.desk.field_values(ticket, NORMALIZE[bench.side])
    assert values == {"status": "open", "priority": "high"}
    assert await bench.desk.find_by_marker(bench.create_params(4001)) == ticket_id


async def test_many_tickets_are_read_in_as_few_requests_as_the_desk_allows(
    bench: Bench,
) -> None:
    made = [await _created(bench, 4010 + n) for n in range(2)]
    each = {ticket_id: await bench.desk.read_ticket(ticket_id) for ticket_id in made}
    before = bench.requests()
    # Each as read_ticket reads it; 987654 is no ticket: absent, not an error.
    assert await bench.desk.read_tickets([made[1], 987654, made[0]]) == each
    assert bench.requests() - before == 1
    # More ids than one request may name: one request per chunk of them.
    many = [*made, *range(900000, 900000 + 2 * bench.ids_per_read)]
    before = bench.requests()
    assert set(await bench.desk.read_tickets(many)) == set(made)
    assert bench.requests() - before == 3


async def test_an_update_writes_over_the_ticket_read_and_returns_its_new_source_time(
    bench: Bench,
) -> None:
    ticket_id = await _created(bench, 4002, "high")
    current = await bench.desk.read_ticket(ticket_id)
    stamp = await bench.desk.update_ticket(ticket_id, bench.remote_priority("low"), current)
    assert isinstance(stamp, str) and stamp
    after = await bench.desk.read_ticket(ticket_id)
    assert bench.desk.field_values(after, NORMALIZE[bench.side])["priority"] == "low"


async def test_a_note_is_added_and_read_back_with_its_id_and_text(bench: Bench) -> None:
    ticket_id = await _created(bench, 4003)
    text = "Isolated the host\n\n[socbridge: SOC comment 77]"
    note_id = await bench.desk.add_note(ticket_id, bench.note_params("soc:77", text))
    notes = await bench.desk.read_notes(ticket_id)
    found = [n for n in notes if "[socbridge: SOC comment 77]" in n.text]
    assert len(found) == 1 and (note_id is None or found[0].id == note_id)


async def test_a_missing_ticket_is_remote_not_found_whichever_desk(bench: Bench) -> None:
    with pytest.raises(contract.RemoteNotFoundError) as caught:
        await bench.desk.read_ticket(987654)
    assert caught.value.status == 404 and caught.value.side == bench.side


async def test_a_server_error_past_the_retries_is_a_remote_server_error(bench: Bench) -> None:
    ticket_id = await _created(bench, 4004)
    bench.fail_next(503, 5)
    with pytest.raises(contract.RemoteServerError) as caught:
        await bench.desk.read_ticket(ticket_id)
    assert caught.value.status == 503 and isinstance(caught.value, contract.RemoteApiError)


async def test_a_fetch_is_observed_in_the_tickets_stream_caused_by_its_command(
    bench: Bench,
) -> None:
    ticket_id = await _created(bench, 4005)
    command = bench.command("fetch_ticket", {"api_member": "socbridge"})
    link = Link("l-1", "acme", "cw", requested_at=1)
    link.set_ticket_id(bench.side, ticket_id)
    result = await fetch_ticket(bench.store, command, link, {bench.side: bench.desk})
    event = await bench.store.get(result["event_id"])
    assert event is not None and event.stream == bench.desk.stream_for(ticket_id)
    assert event.type in kinds.OBSERVATIONS and event.causation_id == command.command_id
    assert (event.data["via"], event.data["fetch"]) == ("fetch", command.command_id)
    assert event.data["read_after"] == result["read_after"] and event.data["fresh"] is True
    assert event.ticket == f"{bench.side}:{ticket_id}" and event.tenant == "acme"


async def test_every_note_of_a_ticket_is_observed_when_asked(bench: Bench) -> None:
    ticket_id = await _created(bench, 4006)
    await bench.desk.add_note(ticket_id, bench.note_params("soc:78", "A reply"))
    events = await bench.desk.note_observations(ticket_id, "acme", bench.command("fetch_notes"))
    texts = [str(e.data.get("text") or e.data.get("body")) for e in events]
    assert any(t.startswith("A reply") for t in texts)
    assert {e.type for e in events} <= kinds.OBSERVATIONS
    assert {e.stream for e in events} == {bench.desk.stream_for(ticket_id)}


# --------------------------------------------------------------------- the poller


async def test_a_pass_records_a_ticket_once_and_the_next_pass_nothing(bench: Bench) -> None:
    ticket_id = await _created(bench, 4007)
    first = await bench.poller.poll_once()
    assert first.seen >= 1 and first.tickets_recorded >= 1
    assert await bench.poller.watermark() is not None
    again = await bench.poller.poll_once()
    assert (again.tickets_recorded, again.notes_recorded) == (0, 0)
    stream = await bench.store.read_stream(bench.desk.stream_for(ticket_id))
    # Its callback or webhook may have recorded it too: the passes recorded it once.
    polled = [e for e in stream if e.type.endswith("ticket.observed") and e.data["via"] == "poll"]
    assert len(polled) == 1


async def test_a_kick_reads_that_ticket_at_once_and_records_what_changed(bench: Bench) -> None:
    ticket_id = await _created(bench, 4008, "high")
    await bench.poller.refresh(ticket_id, "acme")
    current = await bench.desk.read_ticket(ticket_id)
    await bench.desk.update_ticket(ticket_id, bench.remote_priority("urgent"), current)
    bench.poller.kick(ticket_id, "acme")
    report = await bench.poller.refresh_kicked()
    assert report.seen == 1
    # Recorded by the refresh, or by the change's own callback or webhook just before it.
    stream = await bench.store.read_stream(bench.desk.stream_for(ticket_id))
    last = [e for e in stream if e.type.endswith("ticket.observed")][-1]
    assert last.data["priority"] == bench.remote_priority("urgent")["priority"]


# --------------------------------------------------------------------- the intake


async def test_a_change_on_the_desk_arrives_signed_and_is_recorded_once(bench: Bench) -> None:
    ticket_id = await _created(bench, 4009)
    await bench.delivered()
    stream = await bench.store.read_stream(bench.desk.stream_for(ticket_id))
    arrived = [e for e in stream if e.data.get("via") in ("callback", "webhook")]
    assert arrived and all(e.tenant == "acme" for e in arrived)
    assert bench.intake.counts.get("accepted", 0) >= 1
    assert not any(k.startswith("rejected.") for k in bench.intake.counts)


async def test_an_unsigned_delivery_is_refused_and_recorded_as_rejected_only(
    bench: Bench,
) -> None:
    port = await _intake_port(bench)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}{bench.intake.path}", data=b"{}") as resp:
            assert resp.status in (400, 401)
    rejected = await bench.store.read_stream("intake:rejected")
    assert [e.type for e in rejected] == [kinds.INTAKE_REJECTED]
    assert sum(n for k, n in bench.intake.counts.items() if k.startswith("rejected.")) == 1


async def _intake_port(bench: Bench) -> int:
    settings: Any = bench.intake.settings  # type: ignore[attr-defined]
    url = settings.public_callback_url if bench.side == "cw" else settings.webhook.public_url
    return int(str(url).split(":")[2].split("/")[0])


def test_desk_errors_are_classified_by_status_on_both_desks() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from daemon.connectors.connectwise.errors import parse_error as cw_error
    from daemon.connectors.soc.errors import parse_error as soc_error

    classes = {
        400: contract.RemoteInvalidError, 401: contract.RemoteAuthError,
        403: contract.RemoteAuthError, 404: contract.RemoteNotFoundError,
        409: contract.RemoteConflictError, 410: contract.RemoteNotFoundError,
        422: contract.RemoteInvalidError, 429: contract.RemoteRateLimitedError,
        500: contract.RemoteServerError, 503: contract.RemoteServerError,
    }  # fmt: skip
    headers = CIMultiDictProxy(CIMultiDict())
    for status, kind in classes.items():
        for side, parse in (("cw", cw_error), ("soc", soc_error)):
            error = parse(status, headers, b"")
            assert isinstance(error, kind), (side, status, type(error))
            assert (error.status, error.side) == (status, side)


async def test_the_pollers_run_loop_survives_a_failed_pass(bench: Bench) -> None:
    stop, passed = asyncio.Event(), asyncio.Event()
    bench.poller.on_pass(lambda _report: passed.set())
    bench.poller.interval = 0.05
    bench.fail_next(503, 4)  # the first pass fails whole (two attempts of each request)
    task = asyncio.create_task(bench.poller.run(stop))
    try:
        await asyncio.wait_for(passed.wait(), 20)  # a later pass, on the same task
    finally:
        stop.set()
        await task
