"""The shipped Grafana dashboard: importable JSON that asks only for socbridge's series."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.monitoring.promql import (
    DASHBOARD,
    alert_rules,
    dashboard,
    dashboard_exprs,
    panels,
    series_names,
)


def test_the_dashboard_is_json_grafana_imports_with_a_datasource_input() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_names_only_socbridge_and_process_series() -> None:
    for expr in dashboard_exprs(dashboard()):
        names = series_names(expr)
        assert names, expr
        assert all(n.startswith(("socbridge_", "process_")) for n in names), (expr, names)


def test_the_dashboard_shows_every_series_an_alert_reads() -> None:
    alerted = {n for rule in alert_rules() for n in series_names(rule["expr"])}
    shown = {n for expr in dashboard_exprs(dashboard()) for n in series_names(expr)}
    assert alerted <= shown, alerted - shown


def test_the_series_names_are_read_out_of_promql() -> None:
    expr = (
        'sum by (instance, le) (rate(socbridge_x_bucket{instance=~"$instance",le="1e3"}'
        "[$__rate_interval])) / on (side) group_left time() - max_over_time(up[5m:1m]) * 1e3"
    )
    assert series_names(expr) == {"socbridge_x_bucket", "up"}


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables filled in."""
    exprs = [re.sub(r"\$__\w+", "5m", e).replace("$instance", ".*")
             for e in dashboard_exprs(dashboard())]  # fmt: skip
    rules = [{"record": f"socbridge:dashboard_query_{n}", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
