"""``promtool``, from Debian's ``prometheus`` package: skipped when it is missing, unless
``SOCBRIDGE_PROMTOOL_TESTS=required`` (as ``.ci/run`` sets it), where a missing one fails."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is not None:
        return path
    if os.environ.get("SOCBRIDGE_PROMTOOL_TESTS") == "required":
        pytest.fail("promtool is missing and SOCBRIDGE_PROMTOOL_TESTS=required: "
                    "apt-get install prometheus")  # fmt: skip
    pytest.skip("promtool is not installed (apt-get install prometheus); "
                "SOCBRIDGE_PROMTOOL_TESTS=required makes this a failure")  # fmt: skip
