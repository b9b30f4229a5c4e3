"""The burst benchmark runs end to end at a small size and reports what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.bench.burst import Shape, _passes, delta, final_priority, run_burst


def test_the_metrics_arithmetic_counts_only_matching_requests() -> None:
    name = "socbridge_remote_requests_total"
    before = {(name, '{method="PUT",purpose="write",side="soc"}'): 2.0}
    after = {
        (name, '{method="PUT",purpose="write",side="soc"}'): 7.0,
        (name, '{method="GET",purpose="write",side="soc"}'): 4.0,
        (name, '{method="GET",purpose="fetch",side="cw"}'): 3.0,
    }
    assert delta(before, after, "soc", purpose="write", method="PUT") == 5
    assert delta(before, after, "soc") == 9
    assert delta(before, after, "cw", purpose="fetch") == 3
    assert final_priority(Shape(changes_per_link=100)) == "Priority 4 - Schedule Maintenance"


@pytest.mark.slow
async def test_a_small_burst_converges_and_is_counted(tmp_path: Path) -> None:
    figures = await run_burst(tmp_path, Shape(links=2, changes_per_link=12))
    assert figures["burst_agreed"] and figures["burst_changes"] == 24
    # Each link was written at least once on the SOC, and far fewer times than changed.
    assert 2 <= figures["burst_soc_writes"] < 24
    assert figures["burst_soc_requests"] >= figures["burst_soc_writes"]
    assert figures["burst_decisions_per_commit"] >= 1


def test_idle_passes_are_counted_per_desk_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    log.write_text(
        '{"desk": "soc", "event": "poll.done", "level": "info"}\n'
        '{"event": "poll.done", "desk": "cw"}\n'
        '{"event": "poll.failed", "desk": "cw"}\n'
        "not json, from before logging was configured\n"
        '{"desk": "soc", "event": "poll.done"}\n'
    )
    assert _passes(log) == {"cw": 1, "soc": 2}
