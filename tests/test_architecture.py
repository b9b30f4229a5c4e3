"""The layers stay as designed: the import contracts in ``pyproject.toml`` hold.

``lint-imports`` (import-linter) checks them: the event store imports nothing of
socbridge, projections only the event store, sync neither the outbox nor a desk,
and nothing the daemon runs imports a simulator or a benchmark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO


def test_every_import_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout
