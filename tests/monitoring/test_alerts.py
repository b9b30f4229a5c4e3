"""The shipped alerting rules: valid for Prometheus, each proven by a promtool unit test,
and each with its runbook line in docs/operations.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.monitoring.promql import ALERTS, alert_rules
from tests.support.paths import REPO

TESTS = Path(__file__).with_name("alerts_test.yml")


def _promtool(promtool: str, *args: str, cwd: Path = REPO) -> str:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_accepts_the_rules(promtool: str) -> None:
    output = _promtool(promtool, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_every_alert_fires_when_it_should_and_only_then(promtool: str) -> None:
    _promtool(promtool, "test", "rules", TESTS.name, cwd=TESTS.parent)


def test_every_alert_has_a_unit_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    assert {rule["alert"] for rule in alert_rules()} <= tested


def test_every_alert_links_its_runbook_line_in_operations_md() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", operations, re.M)
    }
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        page, anchor = url.split("#")
        assert page == "docs/operations.md" and anchor in headings, (rule["alert"], url)
        assert anchor == rule["alert"].lower()
        assert rule["annotations"]["summary"]
