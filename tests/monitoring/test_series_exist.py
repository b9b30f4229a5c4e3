"""Every series the shipped rules and dashboard name is in the rehearsal daemon's /metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daemon.simulators.harness import Bridge
from tests.monitoring.promql import shipped_series

#: Counters that have samples only once something went wrong (a label per remote status or
#: per task): declared from the start, and those must be.
ONLY_ON_TROUBLE = {
    "socbridge_remote_errors_total",
    "socbridge_remote_request_errors_total",
    "socbridge_task_restarts_total",
}


async def test_every_series_the_rules_and_dashboard_name_is_exposed(tmp_path: Path) -> None:
    used = shipped_series()
    assert {"socbridge_poll_changes_total", "process_start_time_seconds"} <= set(used)
    async with Bridge(tmp_path) as bridge:
        assert bridge.config is not None
        url = f"http://127.0.0.1:{bridge.config.server.port}/metrics"
        # A SOC incident synced to ConnectWise: a webhook, a delivery, ConnectWise's callback.
        soc = await bridge.analyst.create_ticket("Credential stuffing", "details")

        async def linked() -> bool:
            link = bridge.engine.state.link_for("soc", soc["id"])
            return link is not None and link.cw_id is not None

        await bridge.until(linked, "the SOC ticket to reach ConnectWise")

        missing: set[str] = set()

        async def exposed() -> tuple[set[str], set[str], str] | None:
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                text = await resp.text()
            families = list(text_string_to_metric_families(text))
            samples = {s.name for f in families for s in f.samples}
            missing.clear()
            missing.update(set(used) - samples - ONLY_ON_TROUBLE)
            return None if missing else (samples, {f.name for f in families}, text)

        try:
            found = await bridge.until(exposed, "every series the rules and dashboard name")
        except TimeoutError:
            raise AssertionError({name: used[name] for name in missing}) from None
        samples, declared, text = found
    for name in ONLY_ON_TROUBLE & set(used):
        assert name.removesuffix("_total") in declared, name
    assert set(used) <= samples | ONLY_ON_TROUBLE
    assert {"socbridge_remote_up", "process_start_time_seconds"} <= samples
    for path in ("webhook", "poll", "delivery"):
        assert f'path="{path}"' in text, path
