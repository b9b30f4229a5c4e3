"""The monitoring series of /metrics, through the real daemon and both simulators: what
docs/monitoring/alerts.yml and the Grafana dashboard read."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import aiohttp

from daemon.simulators.connectwise.faults import ApiFault
from daemon.simulators.harness import Bridge


async def scrape(bridge: Bridge) -> str:
    assert bridge.config is not None
    url = f"http://127.0.0.1:{bridge.config.server.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


def value(text: str, series: str) -> float | None:
    """The value of one exposed series (name and labels as exposed), or None."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def last_success(side: str, path: str) -> str:
    return f'socbridge_last_success_timestamp_seconds{{path="{path}",side="{side}"}}'


async def test_changes_only_a_poll_found_are_counted_and_callbacks_stamp_their_arrival(
    tmp_path: Path,
) -> None:
    async with Bridge(tmp_path) as bridge:
        assert bridge.rehearsal is not None
        text = await scrape(bridge)
        assert value(text, f'socbridge_build_info{{version="{version("socbridge")}"}}') == 1
        assert value(text, "process_start_time_seconds") is not None
        # ConnectWise's callbacks are lost: the ticket reaches the SOC through a poll.
        bridge.rehearsal.cw.faults.update({"drop_callbacks": 1_000_000})
        cw = await bridge.technician.create_ticket("Phishing mailbox rule")

        async def found_by_poll() -> str | None:
            link = bridge.engine.state.link_for("cw", cw["id"])
            if link is None or link.soc_id is None:
                return None
            text = await scrape(bridge)
            # The pass is counted once it completes, which may be after the delivery.
            changes = value(text, 'socbridge_poll_changes_total{side="cw"}')
            return text if changes and value(text, last_success("soc", "delivery")) else None

        text = await bridge.until(found_by_poll, "the polled ticket counted and delivered")
        assert value(text, last_success("cw", "poll")) is not None
        assert value(text, last_success("cw", "callback")) is None  # none arrived

        # Callbacks flow again: the next change arrives by one, and its time is exposed.
        bridge.rehearsal.cw.faults.update({"drop_callbacks": 0})
        await bridge.technician.set(cw["id"], priority="Priority 1 - Emergency Response")

        async def called_back() -> str | None:
            text = await scrape(bridge)
            return text if value(text, last_success("cw", "callback")) else None

        text = await bridge.until(called_back, "ConnectWise's callback to be recorded")
        assert value(text, last_success("cw", "callback")) >= value(  # type: ignore[operator]
            text, last_success("soc", "delivery")
        )


async def test_a_desk_answering_5xx_is_down_and_its_commands_wait_on_its_side(
    tmp_path: Path,
) -> None:
    async with Bridge(tmp_path) as bridge:
        assert bridge.rehearsal is not None
        bridge.rehearsal.cw.faults.api.append(ApiFault(503, 1_000_000))
        soc = await bridge.analyst.create_ticket("Beacon to a known C2", "details")

        async def waiting() -> str | None:
            text = await scrape(bridge)
            pending = value(text, 'socbridge_outbox_pending{side="cw"}')
            down = value(text, 'socbridge_remote_up{side="cw"}') == 0
            return text if down and pending else None

        text = await bridge.until(waiting, "ConnectWise down with the create waiting for it")
        assert value(text, 'socbridge_remote_up{side="soc"}') == 1
        assert value(text, 'socbridge_outbox_pending{side="soc"}') == 0
        assert value(text, 'socbridge_outbox_oldest_age_seconds{side="cw"}') > 0  # type: ignore[operator]
        assert value(text, 'socbridge_outbox_oldest_age_seconds{side="soc"}') == 0
        assert value(text, "socbridge_decision_lag_events") is not None
        # Every attempt ConnectWise failed is counted, retries included; the SOC failed none.
        failed = value(text, 'socbridge_remote_request_errors_total{side="cw",status="503"}')
        assert failed is not None and failed >= 1
        assert 'socbridge_remote_request_errors_total{side="soc"' not in text

        bridge.rehearsal.cw.faults.api.clear()

        async def delivered() -> str | None:
            link = bridge.engine.state.link_for("soc", soc["id"])
            text = await scrape(bridge)
            up = value(text, 'socbridge_remote_up{side="cw"}') == 1
            idle = value(text, 'socbridge_outbox_pending{side="cw"}') == 0
            return text if link and link.cw_id and up and idle else None

        text = await bridge.until(delivered, "the create delivered once ConnectWise answers")
        assert value(text, 'socbridge_outbox_oldest_age_seconds{side="cw"}') == 0
        assert value(text, last_success("cw", "delivery")) is not None
