"""The simulator driven by a third-party client, pyconnectwise (sync, requests).

pyconnectwise always speaks https (``https://{manage_url}/...``), so the
simulator serves TLS here with a throwaway self-signed certificate for
127.0.0.1, trusted through ``REQUESTS_CA_BUNDLE``. pyconnectwise is blocking,
so its calls run in a worker thread while the simulator serves on the loop.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemon.simulators.connectwise import SimServer, fixture

pyconnectwise = pytest.importorskip("pyconnectwise")
from pyconnectwise import ConnectWiseManageAPIClient  # noqa: E402
from pyconnectwise.exceptions import (  # noqa: E402
    AuthenticationFailedException,
    NotFoundException,
    ObjectExistsError,
    PermissionsFailedException,
)

T = TypeVar("T")
# pyconnectwise's own models use a deprecated pydantic Field form.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_sim(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SimServer]:
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    # Configuration of requests, not a patch of any component under test.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with SimServer(ssl_context=ctx) as server:
        yield server


async def run(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def manage(sim: SimServer, public: str = fixture.API_PUBLIC_KEY,
           private: str = fixture.API_PRIVATE_KEY) -> ConnectWiseManageAPIClient:  # fmt: skip
    return ConnectWiseManageAPIClient(
        fixture.LOGIN_COMPANY, f"127.0.0.1:{sim.port}", fixture.CLIENT_ID, public, private
    )


async def test_pyconnectwise_discovers_codebase_and_reads_reference_data(
    tls_sim: SimServer,
) -> None:
    client = await run(lambda: manage(tls_sim))
    assert client.codebase == fixture.CODEBASE
    boards = await run(lambda: client.service.boards.get())
    assert {b.name for b in boards} == {"SOC Incidents", "Help Desk"}
    statuses = await run(lambda: client.service.boards.id(fixture.BOARD_ID).statuses.get())
    assert [s.name for s in statuses if s.closed_status] == ["Solved"]
    prios = await run(lambda: client.service.priorities.get())
    assert prios[0].name == "Priority 1 - Emergency Response"
    # pyconnectwise ships this endpoint class but does not attach it to .id(31).
    from pyconnectwise.endpoints.manage.SystemSecurityrolesIdSettingsEndpoint import (
        SystemSecurityrolesIdSettingsEndpoint,
    )

    settings = SystemSecurityrolesIdSettingsEndpoint(
        client, parent_endpoint=client.system.security_roles.id(31)
    )
    role = await run(settings.get)
    assert {r.module_function_name for r in role} >= {"Service Tickets", "Table Setup"}
    info = await run(lambda: client.system.info.get())
    assert info.version is not None


async def test_pyconnectwise_ticket_lifecycle(tls_sim: SimServer) -> None:
    client = await run(lambda: manage(tls_sim))
    ticket = await run(lambda: client.service.tickets.post(data={
        "summary": "Phishing report", "company": {"id": 250}, "board": {"id": fixture.BOARD_ID},
    }))  # fmt: skip
    assert ticket.id is not None and ticket.status.name == "New"
    assert ticket.company.identifier == "AcmeCorp"
    patched = await run(lambda: client.service.tickets.id(ticket.id).patch(data=[
        {"op": "replace", "path": "status", "value": {"id": fixture.STATUS_IDS["Solved"]}},
    ]))  # fmt: skip
    assert patched.status.name == "Solved" and patched.closed_flag is True
    note = await run(lambda: client.service.tickets.id(ticket.id).notes.post(data={
        "text": "closed by the SOC", "resolutionFlag": True,
    }))  # fmt: skip
    assert note.resolution_flag is True
    found = await run(lambda: client.service.tickets.get(params={
        "conditions": f"id = {ticket.id} and closedFlag = true", "fields": "id,summary",
    }))  # fmt: skip
    assert [t.summary for t in found] == ["Phishing report"]
    with pytest.raises(NotFoundException):
        await run(lambda: client.service.tickets.id(424242).get())


async def test_pyconnectwise_pages_with_link_headers(tls_sim: SimServer) -> None:
    client = await run(lambda: manage(tls_sim))
    for i in range(5):
        await run(lambda i=i: client.service.tickets.post(
            data={"summary": f"Alert {i}", "company": {"id": 251}}))  # fmt: skip
    pages: Any = await run(lambda: client.service.tickets.paginated(1, 2, {"orderBy": "id asc"}))
    summaries = []
    while pages is not None:
        summaries += [t.summary for t in pages.data]
        pages = await run(pages.get_next_page) if pages.has_next_page else None
    assert summaries == [f"Alert {i}" for i in range(5)]


async def test_pyconnectwise_reads_many_tickets_by_id_in_one_request(tls_sim: SimServer) -> None:
    client = await run(lambda: manage(tls_sim))
    made = []
    for i in range(3):
        made.append(await run(lambda i=i: client.service.tickets.post(
            data={"summary": f"Alert {i}", "company": {"id": 250}})))  # fmt: skip
    wanted = [made[2].id, made[0].id, 424242]  # 424242: no such ticket, simply not listed
    found = await run(lambda: client.service.tickets.get(params={
        "conditions": f"id in ({', '.join(str(i) for i in wanted)})", "pageSize": 1000,
    }))  # fmt: skip
    assert sorted(t.id for t in found) == sorted([made[0].id, made[2].id])


async def test_pyconnectwise_sees_the_documented_errors(tls_sim: SimServer) -> None:
    bad = await run(lambda: manage(tls_sim, private="wrong"))
    with pytest.raises(AuthenticationFailedException):
        await run(lambda: bad.service.tickets.get())
    client = await run(lambda: manage(tls_sim))
    entry = {"url": "https://x.example/cb", "objectId": 41, "type": "ticket", "level": "board"}
    await run(lambda: client.system.callbacks.post(data=entry))
    with pytest.raises(ObjectExistsError):
        await run(lambda: client.system.callbacks.post(data=entry))
    del tls_sim.state.roles[31].permissions[("Service Desk", "Service Tickets")]
    with pytest.raises(PermissionsFailedException):
        await run(lambda: client.service.tickets.get())
