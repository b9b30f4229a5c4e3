"""``socbridge sync-test`` (R12) against both simulators and a running daemon.

The daemon runs in this process (the harness's Bridge, its app on a real
loopback port); the command runs as a separate process, as an operator would
start it, and talks HTTP to the daemon and both simulators and writes the same
SQLite log beside the daemon. Step deadlines are short; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web

from daemon.cli.main import build_parser, main
from daemon.cli.sync_test import sync_test_command
from daemon.connectors.connectwise.settings import ApiKeys
from daemon.operations.sync_test import StepFailed, StepResult, SyncTest
from daemon.service.app import ENGINE, build_app
from daemon.service.config import load_config
from daemon.service.listener import start_sites
from daemon.service.secrets import load_secret
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.harness import Bridge
from daemon.simulators.rehearsal import start_rehearsal, write_config
from daemon.simulators.soc import fixture as socfx
from eventstore import EventStore, NewEvent
from projections import kinds

RECIPIENT = "soc-desk@acme.example"
SECRETS = (
    cwfx.API_PUBLIC_KEY,
    cwfx.API_PRIVATE_KEY,
    cwfx.TECH_PRIVATE_KEY,
    socfx.API_TOKEN,
)
STEP_NAMES = [
    "preflight",
    "create_soc_to_cw",
    "reply_soc_to_cw",
    "reply_cw_to_soc",
    "create_cw_to_soc",
    "solve_soc_to_cw",
    "solve_cw_to_soc",
]


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with Bridge(tmp_path, poll_s=0.5) as b:
        yield b


def technician_keys(config: Path) -> list[str]:
    """The options naming the technician's key pair 'sim all' writes beside its config."""
    secrets = config.parent / "secrets"
    return [
        "--technician-public-key", str(secrets / "tech_public_key"),
        "--technician-private-key", str(secrets / "tech_private_key"),
    ]  # fmt: skip


async def sync_test(config: Path, *extra: str, tenant: str = "acme") -> tuple[int, str, str]:
    """The real parser and command, run in a thread with its own event loop (and its own
    HTTP clients and log connection), so the daemon in this loop serves it meanwhile."""
    argv = ["sync-test", "--config", str(config), "--tenant", tenant,
            "--timeout", "10", "--poll", "0.3", *extra]  # fmt: skip
    args = build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    loop = asyncio.get_running_loop()
    rc = await asyncio.wait_for(
        loop.run_in_executor(None, lambda: asyncio.run(sync_test_command(args, out, err))), 90
    )
    return rc, out.getvalue(), err.getvalue()


async def socbridge_main(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``daemon.cli.main.main``, the console entry point, in a thread; its output captured."""
    loop = asyncio.get_running_loop()
    rc = await asyncio.wait_for(loop.run_in_executor(None, main, argv), 90)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def parse(out: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    lines = [orjson.loads(line) for line in out.splitlines()]
    steps = {d["step"]: d for d in lines if d["type"] == "step"}
    (summary,) = [d for d in lines if d["type"] == "summary"]
    return steps, summary


async def sync_test_events(store: EventStore, run_id: str) -> list[Any]:
    return [e async for e in store.read() if e.correlation_id == run_id]


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def test_every_step_passes_for_an_enabled_tenant_and_is_in_the_log(
    bridge: Bridge,
) -> None:
    assert bridge.rehearsal is not None and bridge.config is not None
    rc, out, err = await sync_test(
        bridge.rehearsal.config_path, "--recipient", RECIPIENT, "--json",
        *technician_keys(bridge.rehearsal.config_path),
    )  # fmt: skip
    assert rc == 0, out + err
    steps, summary = parse(out)
    assert list(steps) == STEP_NAMES
    assert all(s["status"] == "passed" for s in steps.values()), steps
    assert summary["ok"] and summary["passed"] == 7 and summary["failed"] == 0
    run_id, tickets = summary["run_id"], summary["tickets"]

    # The SOC ticket's requester is the recipient; both sides hold what the steps claim.
    soc_a = bridge.rehearsal.soc.state.tickets[tickets["soc_a"]]
    assert bridge.rehearsal.soc.state.users[soc_a.requester_id].email == RECIPIENT
    assert soc_a.organization_id == 9001 and run_id in soc_a.subject
    notes = await bridge.technician.notes(tickets["cw_a"])
    assert any("public reply from the SOC" in n["text"] for n in notes)
    comments = await bridge.analyst.comments(tickets["soc_a"])
    assert any("note from the MSP" in c["body"] for c in comments)
    for key in ("soc_a", "soc_b"):
        assert (await bridge.analyst.ticket(tickets[key]))["status"] == "solved"
    for key in ("cw_a", "cw_b"):
        assert (await bridge.technician.ticket(tickets[key]))["status"]["name"] == "Solved"

    # Every step is an event: one run id as correlation, tenant set, reasons in data.
    events = await sync_test_events(bridge.store, run_id)
    assert [e.type for e in events] == [
        kinds.SYNC_TEST_STARTED,
        *[kinds.SYNC_TEST_STEP_PASSED] * 7,
        kinds.SYNC_TEST_FINISHED,
    ]
    assert {e.tenant for e in events} == {"acme"}
    assert [e.data["step"] for e in events[1:-1]] == STEP_NAMES
    assert all(e.data["reason"] for e in events[1:-1])
    assert events[1].causation_id == events[0].event_id
    assert events[-1].data["ok"] is True
    assert_no_secrets(out, err, *(orjson.dumps(e.to_dict()).decode() for e in events))


async def test_a_tenant_whose_sync_is_off_fails_preflight_and_nothing_is_created(
    bridge: Bridge,
) -> None:
    assert bridge.rehearsal is not None
    soc_before = len(bridge.rehearsal.soc.state.tickets)
    cw_before = len(bridge.rehearsal.cw.state.tickets)

    # Off in the config (globex).
    rc, out, err = await sync_test(
        bridge.rehearsal.config_path, "--recipient", RECIPIENT, tenant="globex"
    )
    assert rc == 1, out + err
    lines = out.splitlines()
    assert "preflight" in lines[1] and "FAILED" in lines[1]
    assert "sync is off for tenant globex (the config's sync_enabled)" in lines[1]
    skipped = [line for line in lines if "SKIPPED" in line]
    assert len(skipped) == 6 and all("needs 'preflight', which failed" in s for s in skipped)
    assert "sync test FAILED: 0 passed, 1 failed, 6 skipped" in out

    # On in the config (acme) but switched off in the log, as 'tenants disable' records it.
    await bridge.store.append(
        [NewEvent(stream="admin", type=kinds.TENANT_SYNC_DISABLED, data={"tenant": "acme"},
                  tenant="acme", source="socbridge.cli")]
    )  # fmt: skip
    rc, out, err = await sync_test(bridge.rehearsal.config_path, "--recipient", RECIPIENT, "--json")
    assert rc == 1, out + err
    steps, summary = parse(out)
    assert steps["preflight"]["status"] == "failed"
    assert "sync is off for tenant acme" in steps["preflight"]["reason"]
    assert "tenants enable/disable" in steps["preflight"]["reason"]
    assert summary["skipped"] == 6 and summary["tickets"] == {}

    assert len(bridge.rehearsal.soc.state.tickets) == soc_before
    assert len(bridge.rehearsal.cw.state.tickets) == cw_before
    failed = [e async for e in bridge.store.read() if e.type == kinds.SYNC_TEST_STEP_FAILED]
    assert {e.data["step"] for e in failed} == set(STEP_NAMES)
    assert {e.tenant for e in failed} == {"globex", "acme"}


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """The real command sends its log lines to its stderr: keep that to this test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restore_structlog")
async def test_preflight_fails_clearly_when_the_daemon_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon this config describes serves TLS (R13); it is not started yet.
    rehearsal = await start_rehearsal("127.0.0.1", 0, tmp_path / "socbridge.toml", None, tls=True)
    base = ["sync-test", "--config", str(rehearsal.config_path), "--timeout", "5"]
    try:
        rc, out, err = await socbridge_main(
            [*base, "--tenant", "acme", "--recipient", RECIPIENT], capsys
        )
        assert rc == 1, out + err
        preflight = out.splitlines()[1]
        assert "FAILED" in preflight
        assert "the daemon is not reachable at https://127.0.0.1:" in preflight
        assert "start it (socbridge run --config FILE" in preflight
        assert "sync test FAILED: 0 passed, 1 failed, 6 skipped" in out
        assert not rehearsal.soc.state.tickets and not rehearsal.cw.state.tickets

        # Usage errors are exit 2, before anything is recorded.
        rc, out, err = await socbridge_main(
            [*base, "--tenant", "initech", "--recipient", RECIPIENT], capsys
        )
        assert rc == 2 and "unknown tenant 'initech'" in err and "acme, globex" in err
        rc, out, err = await socbridge_main(
            [*base, "--tenant", "acme", "--recipient", "not-an-email"], capsys
        )
        assert rc == 2 and "is not a well-formed email address" in err
        assert_no_secrets(out, err)

        # Once it runs, /readyz is read over TLS, trusting the configured certificate.
        config = load_config(rehearsal.config_path)
        app = build_app(config)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await start_sites(runner, config.server)
            await asyncio.wait_for(app[ENGINE].ready.wait(), 30)
            test = SyncTest(config, "acme", RECIPIENT, timeout_s=5)
            async with aiohttp.ClientSession() as session:
                test._session = session
                ready = await test._daemon_ready()
            assert ready.startswith("daemon ready at https://127.0.0.1:")
        finally:
            await runner.cleanup()
    finally:
        await rehearsal.stop()


async def test_without_technician_keys_the_cw_reply_fails_and_names_the_fix(
    tmp_path: Path,
) -> None:
    """socbridge never sends notes its own API member wrote (R8), so the ConnectWise ->
    SOC reply cannot be written with the config's keys: the step says so, writing nothing."""
    write_config(tmp_path / "socbridge.toml", "http://127.0.0.1:9", "http://127.0.0.1:9",
                 "127.0.0.1", 9, 1.0)  # fmt: skip
    test = SyncTest(load_config(tmp_path / "socbridge.toml"), "acme", RECIPIENT)
    test.tickets.update(soc_a=1, cw_a=2)
    with pytest.raises(StepFailed) as failed:
        await test._reply_cw_to_soc()
    assert "API member's keys (socbridge)" in str(failed.value)
    assert "--technician-public-key" in str(failed.value)


async def test_a_step_that_fails_is_reported_with_its_reason_and_its_dependents_skipped(
    bridge: Bridge,
) -> None:
    assert bridge.rehearsal is not None
    # ConnectWise refuses the daemon's next ticket create (the one for the SOC test ticket).
    bridge.rehearsal.cw.faults.update(
        {"api": [{"status": 400, "count": 1, "method": "POST", "path_contains": "service/tickets"}]}
    )
    rc, out, err = await sync_test(
        bridge.rehearsal.config_path, "--recipient", RECIPIENT, "--json",
        *technician_keys(bridge.rehearsal.config_path),
    )  # fmt: skip
    assert rc == 1, out + err
    steps, summary = parse(out)
    assert steps["preflight"]["status"] == "passed"
    create = steps["create_soc_to_cw"]
    assert create["status"] == "failed"
    assert "the daemon parked cw.create_ticket: refused by the remote" in create["reason"]
    for name in ("reply_soc_to_cw", "reply_cw_to_soc", "solve_soc_to_cw"):
        assert steps[name]["status"] == "skipped"
        assert steps[name]["reason"] == "needs 'create SOC -> ConnectWise', which failed"
    # The other direction does not depend on it and still runs.
    assert steps["create_cw_to_soc"]["status"] == "passed"
    assert steps["solve_cw_to_soc"]["status"] == "passed"
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (3, 1, 3)

    # The SOC test ticket that never crossed is not left open.
    soc_a = summary["tickets"]["soc_a"]
    assert f"solved SOC ticket {soc_a}" in summary["cleanup"]
    assert (await bridge.analyst.ticket(soc_a))["status"] == "solved"
    events = await sync_test_events(bridge.store, summary["run_id"])
    failed = [e for e in events if e.type == kinds.SYNC_TEST_STEP_FAILED]
    assert [e.data["status"] for e in failed] == ["failed", "skipped", "skipped", "skipped"]
    assert failed[0].ticket == f"soc:{soc_a}"
    assert events[-1].type == kinds.SYNC_TEST_FINISHED and events[-1].data["ok"] is False


async def test_a_daemon_that_stops_mid_run_fails_the_waiting_step_and_the_rest_at_once(
    bridge: Bridge,
) -> None:
    assert bridge.rehearsal is not None
    config = bridge.rehearsal.config_path
    secrets = config.parent / "secrets"
    loop = asyncio.get_running_loop()
    crossed, resume = asyncio.Event(), threading.Event()

    def on_step(result: StepResult) -> None:
        # Runs in the command's thread: hold it there until the daemon is down.
        if result.step == "create_soc_to_cw":
            loop.call_soon_threadsafe(crossed.set)
            resume.wait(60)

    keys = ApiKeys(load_secret(str(secrets / "tech_public_key")),
                   load_secret(str(secrets / "tech_private_key")))  # fmt: skip
    test = SyncTest(load_config(config), "acme", RECIPIENT, timeout_s=3, poll_s=0.3,
                    technician=keys, on_step=on_step)  # fmt: skip
    run = loop.run_in_executor(None, lambda: asyncio.run(test.run()))
    try:
        await asyncio.wait_for(crossed.wait(), 60)
        await bridge.stop_daemon()
    finally:
        resume.set()
    report = await asyncio.wait_for(run, 60)

    steps = {s.step: s for s in report.steps}
    assert [s.status for s in report.steps] == [
        "passed", "passed", "failed", "failed", "failed", "failed", "skipped",
    ], report.steps  # fmt: skip
    waited = steps["reply_soc_to_cw"].reason
    assert "not seen within 3 s; the daemon is not reachable at http://127.0.0.1:" in waited
    for name in ("reply_cw_to_soc", "create_cw_to_soc", "solve_soc_to_cw"):
        assert steps[name].reason.startswith("the daemon is not reachable"), steps[name]
    # Nothing more was written while the daemon was known to be down: no ConnectWise ->
    # SOC ticket; the SOC test ticket was solved by the cleanup.
    assert "cw_b" not in report.tickets
    assert f"solved SOC ticket {report.tickets['soc_a']}" in report.cleanup
    assert (await bridge.analyst.ticket(report.tickets["soc_a"]))["status"] == "solved"


async def test_an_interrupted_run_solves_its_tickets_and_records_its_end(bridge: Bridge) -> None:
    assert bridge.rehearsal is not None and bridge.config is not None
    run: asyncio.Task[Any] | None = None

    def on_step(result: StepResult) -> None:
        if result.step == "create_soc_to_cw" and run is not None:
            run.cancel()  # as Ctrl-C does to the command's main task

    test = SyncTest(bridge.config, "acme", RECIPIENT, timeout_s=10, poll_s=0.3, on_step=on_step)
    run = asyncio.create_task(test.run())
    with pytest.raises(asyncio.CancelledError):
        await run

    report = test.report
    assert report.interrupted and not report.ok
    assert [s.step for s in report.steps] == ["preflight", "create_soc_to_cw"]
    soc_a, cw_a = report.tickets["soc_a"], report.tickets["cw_a"]
    assert (await bridge.analyst.ticket(soc_a))["status"] == "solved"
    assert (await bridge.technician.ticket(cw_a))["status"]["name"] == "Solved"
    finished = (await sync_test_events(bridge.store, report.run_id))[-1]
    assert finished.type == kinds.SYNC_TEST_FINISHED
    assert finished.data["interrupted"] is True and finished.data["ok"] is False
