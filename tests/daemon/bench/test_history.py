"""``socbridge bench --keep-history DIR``: the history logs are written once, then reused.

Runs the real history part (logs written through the store, ``socbridge replay``
in a child process, the daemon restarted as a process on the large log) twice on
a small history with one kept folder: the second run must start from the kept
files (and leave them as they were), measure the same logs and resume the
daemon from the kept checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from daemon.bench import history

LARGE = 2000
# A benchmark smoke run: `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(900)  # two quick history runs; a shared machine takes a while
async def test_kept_history_is_written_once_then_reused_unchanged(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    (tmp_path / "first").mkdir()
    first = await history.figures(tmp_path / "first", LARGE, 1, True, keep)
    assert first["history_reused"] is False
    kept = sorted(p.name for p in keep.iterdir())
    assert kept == ["checkpoint.db", "history.json", "large.db", "small.db"]
    before = {name: _digest(keep / name) for name in kept}

    (tmp_path / "second").mkdir()
    second = await history.figures(tmp_path / "second", LARGE, 1, True, keep)
    assert second["history_reused"] is True
    # The same logs were replayed, and writing them was not timed again.
    for key in ("replay_100k_events", "replay_1m_events", "history_links"):
        assert second[key] == first[key], key
    assert second["history_1m_write_s"] == first["history_1m_write_s"]
    # Whole episodes are written, so each log may end a few events past its size.
    assert LARGE <= first["replay_1m_events"] < LARGE + 20
    assert LARGE // 10 <= first["replay_100k_events"] < LARGE // 10 + 20
    # The daemon resumed from the kept checkpoint (not from position 0) on a copy.
    checkpoint = orjson.loads((keep / "history.json").read_bytes())
    assert checkpoint["large"] == LARGE
    assert second["ready_position"] >= LARGE
    assert {name: _digest(keep / name) for name in kept} == before


def test_kept_history_of_another_size_or_generator_is_not_used(tmp_path: Path) -> None:
    kept = history.KeptHistory(tmp_path, LARGE, 10)
    kept.start()
    for name in ("small", "large", "checkpoint"):
        kept.path(name).write_bytes(b"")
    kept.finish({"history_1m_write_s": 1.0})
    assert kept.load() == {
        "fingerprint": kept.fingerprint(), "large": LARGE, "links": 10,
        "figures": {"history_1m_write_s": 1.0},
    }  # fmt: skip
    assert history.KeptHistory(tmp_path, LARGE * 2, 10).load() is None
    assert history.KeptHistory(tmp_path, LARGE, 20).load() is None
    kept.path("checkpoint").unlink()  # a build interrupted before its last file
    assert kept.load() is None
