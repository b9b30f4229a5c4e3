"""``socbridge bench --quick --json``: one JSON line with every figure, positive and finite.

A smoke test: it runs the quick pipeline and history parts (pipeline through the
daemon process, replay and restart on a generated history) in a subprocess and
checks the figures are there and sane, as the event-log part's smoke test does.
They assert no timing target: those are
printed by the benchmark (``pipeline_targets``), and a shared CI machine's
figures say little.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.cli import run_socbridge
from tests.support.paths import REPO

# Benchmark smoke runs: `make test` runs them, `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

PIPELINE_AND_HISTORY = (
    "ingest_per_s",
    "ingest_p99_ms",
    "plain_aiohttp_per_s",
    "plain_aiohttp_p99_ms",
    "ingest_vs_plain",
    "sync_p50_ms",
    "sync_p99_ms",
    "sync_cw_to_soc_p50_ms",
    "sync_cw_to_soc_p99_ms",
    "sync_soc_to_cw_p50_ms",
    "sync_soc_to_cw_p99_ms",
    "replay_100k_s",
    "rss_100k_mb",
    "replay_1m_s",
    "rss_mb",
    "ready_s",
)


@pytest.mark.timeout(900)  # a quiet machine takes well under a minute; a shared one, longer
def test_bench_quick_json_has_every_figure_positive_and_finite(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "bench", "--quick", "--json", "--only", "pipeline",
         "--only", "history", "--history", "4000", "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = result.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    figures = orjson.loads(lines[0])
    for key in PIPELINE_AND_HISTORY:
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert figures["quick"] is True
    assert figures["sync_samples"] > 0 and figures["sync_timeouts"] == 0
    # Read from the daemon's /metrics: how often the log moved on under a decision.
    assert 0 <= figures["sync_decided_again"] < figures["events_appended"]
    # The host probe: how late an idle process wakes from a 10 ms sleep.
    assert 0 <= figures["host_sleep_10ms_p50_ms"] <= figures["host_sleep_10ms_p99_ms"]
    assert 0 <= figures["host_sleep_10ms_late_100ms_pct"] <= 100
    assert figures["replay_1m_events"] > figures["replay_100k_events"] > 0
    assert figures["ready_position"] >= figures["replay_1m_events"]
    # Every target is printed (met or not), and nothing is left in the temp folder.
    assert set(figures["pipeline_targets"]) == {
        "ingest_vs_plain >= 0.5", "ingest_cpu_ms_per_request <= 3 x plain aiohttp's",
        "sync_p99_ms < 50", "rss_mb < 150", "rss flat (1M <= 1.2 x 100k)", "ready_s < 2",
    }  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_bench_quick_prints_one_json_line_with_every_figure(tmp_path: Path) -> None:
    result = run_socbridge(
        "bench",
        "--quick",
        "--json",
        "--events",
        "2000",
        "--sequential",
        "50",
        "--only",
        "store",
        "--dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = orjson.loads(lines[0])
    for key in (
        "append_sequential_eps",
        "append_concurrent_eps",
        "replay_eps",
        "sqlite_limit_batched_eps",
        "sqlite_limit_read_eps",
        "peer_eventsourcing_append_eps",
        "peer_eventsourcing_replay_eps",
    ):
        assert figures[key] > 0, key
    assert figures["events"] >= 2000
    # Each ratio is the figure over the peer's in the same run, the ceiling's included.
    peer = figures["peer_eventsourcing_append_eps"]
    for ratio, key in (
        ("concurrent_vs_peer_append", "append_concurrent_eps"),
        ("sqlite_limit_vs_peer_append", "sqlite_limit_batched_eps"),
    ):
        assert figures[ratio] == round(figures[key] / peer, 2), ratio
    assert figures["concurrent_vs_sqlite_limit"] == round(
        figures["append_concurrent_eps"] / figures["sqlite_limit_batched_eps"], 3
    )
    assert set(figures["pipeline_targets"]) == {
        "append_concurrent_eps / sqlite_limit_batched_eps >= 0.75"
    }
