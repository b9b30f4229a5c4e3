"""The console benchmark runs end to end at a small size and reports every page."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.bench.console import PAGES, run_console


@pytest.mark.slow
async def test_a_small_log_times_every_page_against_the_peer(tmp_path: Path) -> None:
    figures = await run_console(tmp_path, links=200, requests=5)
    assert figures["console_links"] == 200 and figures["console_events"] >= 200 * 20
    for name in PAGES:
        assert 0 < figures[f"console_{name}_p50_ms"] <= figures[f"console_{name}_p99_ms"]
    slowest = max(figures[f"console_{name}_p99_ms"] for name in PAGES)
    assert figures["console_page_p99_ms"] == slowest
    assert 0 < figures["console_healthz_p99_ms"]
