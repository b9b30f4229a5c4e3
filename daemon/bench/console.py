"""Console: how long each page takes with many links in the log.

The daemon process (``socbridge run``) on a log of realistic history
(:class:`daemon.bench.history.HistoryWriter`: 20 events per link, each link's
observations, decisions, commands and outcomes, with the checkpoint a running
daemon saves), its desks unreachable (pages read what the daemon holds, not the
desks). Each page is fetched over loopback one request at a time, after a warm-up;
``console_page_p99_ms`` is the slowest page's 99th percentile. The peer, in the same
process and the same run: ``/healthz``, a handler that does nothing, so
``console_healthz_p99_ms`` is the round trip every page pays anyway. The target is
every page under 200 ms at 10,000 links.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from daemon.bench.history import generate, write_checkpoint
from daemon.bench.pipeline import Child, _until_ok, daemon_child
from daemon.simulators.rehearsal import _free_port, write_config
from eventstore import EventStore

#: Events the history writer makes per link (its episodes average about this many).
EVENTS_PER_LINK = 20
PAGES = {
    "overview": "/",
    "problems": "/problems",
    "links": "/links",
    "links_search": "/links?q={cw_id}",
    "links_tenant_page_50": "/links?tenant=acme&page=50",
    "timeline": "/tickets/{link_id}",
    "tenants": "/tenants",
    "config": "/config",
}


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _time(session: aiohttp.ClientSession, url: str, requests: int) -> list[float]:
    for _ in range(3):  # warm-up: templates compiled, caches filled
        async with session.get(url) as resp:
            assert resp.status == 200, (url, resp.status)
            await resp.read()
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status)
        took.append((time.perf_counter() - started) * 1000)
    return took


async def run_console(root: Path, links: int, requests: int = 50) -> dict[str, Any]:
    folder = root / "console"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "socbridge.toml"
    daemon_port, console_port = _free_port("127.0.0.1"), _free_port("127.0.0.1")
    write_config(config, "http://127.0.0.1:9", "http://127.0.0.1:9", "127.0.0.1", daemon_port,
                 300.0, console_port=console_port)  # fmt: skip
    db = folder / "events.db"
    events = await generate(db, links * EVENTS_PER_LINK, links=links)
    store = await EventStore.open(db)
    try:
        await write_checkpoint(store)
        first = await store.read_batch(1, 1)
    finally:
        await store.close()
    link_id = str(first[0].ticket) if first else ""
    child = daemon_child(config, folder / "daemon.log")
    await child.start()
    figures: dict[str, Any] = {"console_links": links, "console_events": events}
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{daemon_port}"
            await _until_ok(session, base + "/healthz", child)
            console = f"http://127.0.0.1:{console_port}"
            # The console answers once the daemon has folded the log from its checkpoint.
            await _until_console(session, console, child)
            cw_id = link_id.partition(":")[2]
            worst = 0.0
            for name, path in PAGES.items():
                took = await _time(
                    session, console + path.format(cw_id=cw_id, link_id=link_id), requests
                )
                figures[f"console_{name}_p50_ms"] = round(statistics.median(took), 2)
                figures[f"console_{name}_p99_ms"] = round(_p(took, 0.99), 2)
                worst = max(worst, _p(took, 0.99))
            figures["console_page_p99_ms"] = round(worst, 2)
            healthz = await _time(session, base + "/healthz", requests)
            figures["console_healthz_p99_ms"] = round(_p(healthz, 0.99), 2)
    finally:
        await child.stop()
    return figures


async def _until_console(session: aiohttp.ClientSession, url: str, child: Child) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        child.check()
        try:
            async with session.get(url + "/tenants") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("the console did not answer within 120 s")
