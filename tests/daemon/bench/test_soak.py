"""``socbridge bench --only soak``: its measurements, its place in the bench, and a short run.

The helpers read this very process's ``/proc`` entries and fit known lines; the
short run drives a small version of the soak traffic through the real daemon
process and both simulators (marked slow: a benchmark smoke run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.bench import soak
from daemon.cli import bench as bench_cli
from daemon.cli.main import build_parser


def test_rss_anon_and_fds_are_read_from_proc() -> None:
    before = soak.open_fds(os.getpid())
    with open(os.devnull, "rb"):
        assert soak.open_fds(os.getpid()) == before + 1
    rss_anon = soak.proc_status_kb(os.getpid(), "RssAnon")
    assert 1024 < rss_anon <= soak.proc_status_kb(os.getpid(), "VmRSS")
    with pytest.raises(KeyError):
        soak.proc_status_kb(os.getpid(), "NoSuchLine")


def test_warmup_is_two_minutes_of_ten_and_a_fifth_of_shorter_runs() -> None:
    assert soak.warmup_s(600) == 120
    assert soak.warmup_s(3600) == 120
    assert soak.warmup_s(180) == 36
    assert soak.warmup_s(6) == pytest.approx(1.2)


def _samples(mb_at: list[tuple[float, int, float]]) -> list[soak.Sample]:
    return [soak.Sample(at, changes, int(mb * 1024), 20) for at, changes, mb in mb_at]


def test_slope_is_taken_after_the_warmup_per_10k_changes() -> None:
    # 50 MB while warming up, then 2 MB per 1000 changes: 20 MB per 10k.
    warm = [(0.0, 0, 40.0), (5.0, 100, 90.0)]
    steady = [(10.0 + i, 200 + 1000 * i, 90.0 + 2 * i) for i in range(5)]
    samples = _samples(warm + steady)
    assert soak.mb_per_10k_changes(samples, after_s=10.0) == pytest.approx(20.0, abs=0.01)
    # The warm-up's jump, if counted, would dominate.
    assert soak.mb_per_10k_changes(samples, after_s=0.0) > 25


def test_flat_memory_gives_zero_and_too_few_points_give_zero() -> None:
    flat = _samples([(10.0 + i, 1000 * i, 60.0) for i in range(4)])
    assert soak.mb_per_10k_changes(flat, after_s=0.0) == 0.0
    assert soak.mb_per_10k_changes(flat[:1], after_s=0.0) == 0.0
    assert soak.mb_per_10k_changes(flat, after_s=100.0) == 0.0


def test_rss_by_minute_takes_the_first_sample_of_each_whole_minute() -> None:
    samples = _samples([(float(at), 0, at / 10) for at in range(0, 201, 25)])
    assert soak.mb_by_minute(samples) == [7.5, 12.5, 20.0]


def test_soak_runs_only_when_named_with_minutes() -> None:
    assert "soak" not in bench_cli.PARTS
    args = build_parser("bench").parse_args(["bench", "--only", "soak", "--minutes", "3"])
    assert args.only == ["soak"] and args.minutes == 3.0
    assert build_parser("bench").parse_args(["bench"]).minutes is None


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_short_soak_reports_every_figure_and_the_desks_agree(tmp_path: Path) -> None:
    # Few links, changes no faster than the default API caps deliver them.
    profile = soak.Profile(
        links=4, change_every_s=0.5, comment_every_s=1.5, sample_every_s=1.0,
        settle_deadline_s=120.0,
    )  # fmt: skip
    figures = await soak.run_soak(tmp_path, 0.25, profile)
    assert figures["soak_changes"] >= 25
    assert figures["soak_notes"] >= 3 and figures["soak_comments"] >= 8
    assert figures["soak_agreed"] is True, figures.get("soak_disagreements")
    assert 0 <= figures["soak_settle_s"] < 120
    assert 10 < figures["soak_rss_anon_mb_start"] <= figures["soak_rss_anon_mb_end"] + 5
    assert abs(figures["soak_fds_growth"]) <= 5
    assert figures["soak_warmup_s"] == 3.0
    assert isinstance(figures["soak_rss_mb_per_10k_changes"], float)
    assert figures["soak_outbox_depth_at_stop"] >= 0
