"""Logs, metrics and the allowlist through the real daemon and both simulators."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from daemon.service.app import CW_CLIENT, METRICS
from daemon.service.guard import guard_middleware
from daemon.service.logs import Redactor, config_secret_refs, configure_logging
from daemon.service.metrics import Metrics
from daemon.service.secrets import Secret
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.harness import Bridge
from daemon.simulators.soc import fixture as socfx
from eventstore import EventStore, NewEvent
from projections import kinds


async def sync_one(bridge: Bridge, subject: str) -> None:
    """A SOC incident synced to ConnectWise, and the bridge settled."""
    soc = await bridge.analyst.create_ticket(subject, "details")

    async def linked() -> bool:
        link = bridge.engine.state.link_for("soc", soc["id"])
        return link is not None and link.cw_id is not None

    await bridge.until(linked, "the SOC ticket to reach ConnectWise")
    await bridge.settled()


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_redactor_scrubs_values_anywhere_and_secret_named_keys() -> None:
    redactor = Redactor([Secret("s3cr3t-value")])
    out = redactor(
        None,
        "info",
        {
            "event": "x",
            "url": "https://h/?t=s3cr3t-value",
            "nested": {"list": ["a s3cr3t-value b"], "api_key": "anything", "Authorization": 1},
            "private_token": "zzz",
            "obj": Secret("short"),
        },
    )
    text = json.dumps(out)
    assert "s3cr3t-value" not in text and "zzz" not in text and "anything" not in text
    assert out["nested"]["api_key"] == "***" and out["obj"] == "***"
    assert out["url"] == "https://h/?t=***"


async def test_no_key_or_token_reaches_a_log_line_during_a_sync(
    tmp_path: Path, restore_structlog: None, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    redactor = Redactor()
    configure_logging(redactor, stream=stream, level=logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None
        redactor.add_refs(config_secret_refs(bridge.config))
        webhook_secret = Path(bridge.config.soc.webhook.signing_secret).read_text().strip()
        await sync_one(bridge, "Impossible travel")
        # The processor is in the path: a line that carries a key is scrubbed.
        structlog.get_logger("test").warning("deliberate", detail=cwfx.API_PRIVATE_KEY)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    # The sync itself was logged (how many poll lines come with it depends on timing).
    events = {line["event"] for line in lines}
    assert {"soc.webhook.accepted", "outbox.command.delivered", "deliberate"} <= events, events
    text = stream.getvalue() + caplog.text
    basic = base64.b64encode(
        f"{cwfx.LOGIN_COMPANY}+{cwfx.API_PUBLIC_KEY}:{cwfx.API_PRIVATE_KEY}".encode()
    ).decode()
    for secret in (
        cwfx.API_PUBLIC_KEY,
        cwfx.API_PRIVATE_KEY,
        socfx.API_TOKEN,
        webhook_secret,
        basic,
    ):
        assert secret not in text


async def test_allowlist_refuses_before_anything_is_appended_and_metrics_show_it(
    tmp_path: Path,
) -> None:
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None
        base = f"http://127.0.0.1:{bridge.config.server.port}"
        await sync_one(bridge, "Beacon to a known C2")
        async with aiohttp.ClientSession() as http:

            async def scraped() -> str | None:
                async with http.get(base + "/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                # The webhook and the first polls may land after the link is made.
                polled = "socbridge_last_reconciliation_timestamp_seconds"
                wanted = (
                    'path="/webhooks/soc",status="200"',
                    f'{polled}{{side="cw"}}',
                    f'{polled}{{side="soc"}}',
                )
                return text if all(w in text for w in wanted) else None

            # A webhook with a forged signature is refused, and counted by its reason.
            forged = {
                "X-Zendesk-Webhook-Signature": "Zm9yZ2Vk",
                "X-Zendesk-Webhook-Signature-Timestamp": "2026-11-29T10:00:00Z",
            }
            async with http.post(base + "/webhooks/soc", data=b"{}", headers=forged) as resp:
                assert resp.status == 401
            metrics = await bridge.until(scraped, "metrics for webhook and both polls")
            soc_intake = r'socbridge_intake_requests_total\{outcome="([^"]+)",route="soc"\} (\S+)'
            intake = dict(re.findall(soc_intake, metrics))
            assert float(intake["accepted"]) >= 1, metrics
            assert [k for k in intake if k.startswith("rejected.")] != [], intake
            count = re.search(r"socbridge_delivery_latency_seconds_count (\S+)", metrics)
            assert count and float(count.group(1)) >= 1  # the create, at least
            assert 'socbridge_last_reconciliation_timestamp_seconds{side="cw"}' in metrics
            assert "socbridge_outbox_depth 0.0" in metrics
            assert 'socbridge_inbound_responses_total{path="/webhooks/soc",status="200"}' in metrics

            server = bridge.config.server.model_copy(
                update={"allowed_sources": (IPv4Network("10.0.0.0/8"),)}
            )
            await bridge.stop_daemon()
            # The simulators' own deliveries from now on come from loopback too, and are
            # refused as well: a late webhook or callback may land in the window below.
            assert bridge.rehearsal is not None
            cw_sim, soc_sim = bridge.rehearsal.cw.callbacks, bridge.rehearsal.soc.dispatcher
            sent = (len(cw_sim.deliveries), len(soc_sim.deliveries))
            await bridge.start_daemon(bridge.config.model_copy(update={"server": server}))
            before = await bridge.store.last_position()
            for route in ("/webhooks/soc", "/callbacks/connectwise"):
                async with http.post(base + route, data=b'{"id": 1}') as resp:
                    assert resp.status == 403
                    assert "Traceback" not in await resp.text()
            # Pollers may append their watermarks meanwhile; nothing may come of the refused
            # requests: no rejection record, no observation from a callback or webhook.
            appended = [e async for e in bridge.store.read(before + 1)]
            assert not [
                e
                for e in appended
                if e.stream == "intake:rejected" or e.data.get("via") in ("callback", "webhook")
            ]
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200  # admin routes: loopback
            async with http.get(base + "/metrics") as resp:
                metrics = await resp.text()
            refused = re.search(
                r'socbridge_requests_refused_by_guard_total\{reason="source_not_allowed",'
                r'route="inbound"\} (\S+)',
                metrics,
            )
            assert refused is not None, metrics
            await cw_sim.drain()
            await soc_sim.drain()
            late = sum(d.status == 403 for d in cw_sim.deliveries[sent[0] :]) + sum(
                d.outcome == "failed 403" for d in soc_sim.deliveries[sent[1] :]
            )
            # Our two requests, plus any the simulators sent meanwhile (each counted once).
            assert 2 <= float(refused.group(1)) <= 2 + late, (refused.group(0), late)
            limit = bridge.config.server.max_body_bytes
            async with http.post(base + "/webhooks/soc", data=b"x" * (limit + 1)) as resp:
                assert resp.status == 403  # refused by source before the body is read


async def test_unexpected_errors_are_a_bare_500_and_oversize_bodies_413() -> None:
    async def boom(request: web.Request) -> web.Response:
        await request.read()
        raise RuntimeError("secret internals")

    loopback = (IPv4Network("127.0.0.0/8"),)
    app = web.Application(client_max_size=2048, middlewares=[guard_middleware(loopback, loopback)])
    app.router.add_post("/webhooks/soc", boom)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/webhooks/soc"
            async with http.post(url, data=b"{}") as resp:
                body = await resp.text()
                assert resp.status == 500 and "secret internals" not in body
                assert "Traceback" not in body
            async with http.post(url, data=b"x" * 4096) as resp:
                assert resp.status == 413
    finally:
        await runner.cleanup()


async def test_remote_errors_are_counted_by_the_status_the_remote_answered(
    tmp_path: Path,
) -> None:
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None and bridge.rehearsal is not None
        # One attempt per client call, so each 503 becomes an outbox failure at once.
        config = bridge.config.model_copy(
            update={"connectwise": bridge.config.connectwise.model_copy(update={"max_attempts": 1})}
        )
        await bridge.stop_daemon()
        await bridge.start_daemon(config)
        bridge.outbox.base_delay_s = 0.05
        bridge.outbox.max_delay_s = 0.2
        bridge.rehearsal.cw.faults.api.append(ApiFault(503, 3, method="POST"))
        soc = await bridge.analyst.create_ticket("Remote error accounting", "details")

        async def failed_three_times() -> bool:
            events = await bridge.events(f"soc:{soc['id']}")
            return sum(e.type == kinds.COMMAND_FAILED for e in events) >= 3

        await bridge.until(failed_three_times, "three failed creates in ConnectWise")
        await bridge.until(
            lambda: _linked(bridge, soc["id"]), "the create to land after the outage"
        )
        base = f"http://127.0.0.1:{config.server.port}"
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
            metrics = await resp.text()
    counted = re.findall(
        r'socbridge_remote_errors_total\{side="cw",status="(\w+)"\} (\S+)', metrics
    )
    assert counted == [("503", "3.0")], metrics
    assert 'status="network"' not in metrics


async def _linked(bridge: Bridge, soc_id: int) -> bool:
    link = bridge.engine.state.link_for("soc", soc_id)
    return link is not None and link.cw_id is not None


def _appended_by_type(metrics: Metrics) -> dict[str, float]:
    [family] = metrics.events.collect()
    return {s.labels["type"]: s.value for s in family.samples if s.name.endswith("_total")}


async def test_metrics_count_events_appended_after_start_and_read_the_head_at_scrape(
    tmp_path: Path,
) -> None:
    async with await EventStore.open(tmp_path / "events.db") as store:
        [before] = await store.append([NewEvent(stream="s", type="t.before", data={})])
        metrics = Metrics()
        await metrics.start(store)
        after = await store.append([NewEvent(stream="s", type="t.after", data={"n": n})
                                    for n in range(2)])  # fmt: skip
        # As the sync engine hands them over: its catch-up from a checkpoint included.
        for event in (before, *after):
            metrics.observe(event)
        assert _appended_by_type(metrics) == {"t.after": 2.0}
        await store.append([NewEvent(stream="s", type="t.unfolded", data={})])
        text = (await metrics.scrape(store)).decode()
        assert 'socbridge_events_appended_total{type="t.after"} 2.0' in text
        assert metrics.head == 4  # the log's end, not the last event observed


async def test_each_event_appended_since_start_is_counted_once_not_the_catch_up(
    tmp_path: Path,
) -> None:
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None
        await sync_one(bridge, "Before the restart")
        await bridge.stop_daemon()
        # Appended while the daemon is down: past the engine's checkpoint, so folded at
        # the next start, but not appended since that start: not counted.
        async with await EventStore.open(bridge.config.store.path) as store:
            for n in range(3):
                await store.append([NewEvent(stream="intake:rejected", type="intake.rejected",
                                             source="test", data={"n": n})])  # fmt: skip
            down_head = await store.last_position()
        await bridge.start_daemon()
        metrics = bridge._app[METRICS]  # type: ignore[index]
        assert metrics.started_at == down_head
        await sync_one(bridge, "After the restart")

        async def counted_once() -> bool:
            total = sum(_appended_by_type(metrics).values())
            return bridge.engine.quiescent and total == bridge.engine.state.position - down_head

        await bridge.until(counted_once, "every folded event since start counted once")
        counts = _appended_by_type(metrics)
        assert "intake.rejected" not in counts
        assert counts["outbox.command.delivered"] >= 1
        head = await bridge.store.last_position()
        base = f"http://127.0.0.1:{bridge.config.server.port}"
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
            text = await resp.text()
        assert metrics.head >= head
        lag = re.search(r"^socbridge_decision_lag_events (\S+)$", text, re.M)
        assert lag is not None and float(lag.group(1)) >= 0
        again = re.search(r"^socbridge_sync_decided_again_total (\S+)$", text, re.M)
        assert again is not None and float(again.group(1)) == bridge.engine.raced


async def test_every_request_to_a_desk_is_counted_by_method_and_purpose(tmp_path: Path) -> None:
    """The API budget: the outbox's writes, the pollers' passes and the re-reads are each
    counted on the desk they go to."""
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None
        base = f"http://127.0.0.1:{bridge.config.server.port}"
        await sync_one(bridge, "Beacon to a known C2")
        pattern = (
            r'socbridge_remote_requests_total\{method="([A-Z]+)",purpose="([a-z]+)",'
            r'side="([a-z]+)"\} (\S+)'
        )

        async def counted() -> dict[tuple[str, str, str], float] | None:
            async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
                text = await resp.text()
            found = {(s, p, m): float(n) for m, p, s, n in re.findall(pattern, text)}
            polled = ("cw", "poll", "GET") in found and ("soc", "poll", "GET") in found
            return found if polled else None

        found = await bridge.until(counted, "both desks polled and counted")
        # The SOC incident's create went to ConnectWise as the outbox's write (a POST).
        assert found[("cw", "write", "POST")] >= 1, found
        assert {p for _, p, _ in found} <= {"poll", "read", "write", "fetch"}
        client = bridge.app[CW_CLIENT].remote
        assert sum(n for (s, _, _), n in found.items() if s == "cw") <= client.attempts_made
