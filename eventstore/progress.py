"""Progress of a long walk of the log, as a plain callback: no terminal, no library.

The functions that walk the whole log (:func:`eventstore.verify`, the NDJSON
export and import, the replay and audit folds in ``projections``) take an
optional ``on_progress``. They call it every :data:`PROGRESS_EVERY` items or so,
never per item, and once when they are done. Drawing it is the command line's
business (``daemon.cli.progress``); the default, None, costs one comparison per
batch (per event in the folds).
"""

from __future__ import annotations

from typing import Protocol

#: Items (events, lines) between two calls of a progress callback.
PROGRESS_EVERY = 1000


class OnProgress(Protocol):
    """``done`` items so far (or the position reached), of ``total`` (None: not known here;
    the caller may know it better, e.g. from the log's last position)."""

    def __call__(self, done: int, total: int | None, /) -> None: ...
