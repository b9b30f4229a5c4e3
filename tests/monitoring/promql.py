"""What the shipped rules and dashboard ask Prometheus for: their PromQL, and the series
names in it (the metric names, with PromQL's functions, keywords and labels left out)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.support.paths import REPO

ALERTS = REPO / "docs" / "monitoring" / "alerts.yml"
DASHBOARD = REPO / "docs" / "monitoring" / "grafana-dashboard.json"

#: PromQL's functions and aggregation operators (a name followed by "(" is not always one).
FUNCTIONS = frozenset(
    """abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month
    day_of_week day_of_year days_in_month delta deriv exp floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters hour idelta increase irate label_join label_replace ln log2
    log10 minute month predict_linear rate resets round scalar sgn sort sort_desc sqrt
    time timestamp vector year avg_over_time min_over_time max_over_time sum_over_time
    count_over_time quantile_over_time stddev_over_time stdvar_over_time last_over_time
    present_over_time acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi
    sum min max avg group stddev stdvar count count_values bottomk topk quantile""".split()
)
KEYWORDS = frozenset(
    "by without on ignoring group_left group_right and or unless offset bool atan2 inf nan".split()
)


def series_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, which may hold anything
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana's variables
    names = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text))
    return names - FUNCTIONS - KEYWORDS


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    """Every query of the dashboard: the panels' targets and the variables' queries."""
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        # label_values(metric, label): only the metric is a series.
        exprs.extend(m.group(1) for m in re.finditer(r"label_values\(([^,)]+)", text))
    return exprs


def shipped_series() -> dict[str, set[str]]:
    """Each series name the rules and the dashboard use -> where they use it."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in series_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expr in dashboard_exprs(dashboard()):
        for name in series_names(expr):
            used.setdefault(name, set()).add("dashboard")
    return used
