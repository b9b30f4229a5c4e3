"""Where the repository is, for tests that run ``python -m daemon`` or read shipped files."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The vendor references beside the repository (``../shared/reference/`` from its root), as
#: every checkout has them: a developer's and CI's alike.
REFERENCE = REPO.parent / "shared" / "reference"
