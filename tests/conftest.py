"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import settings

# Property tests check what holds for every generated case, not how fast one case runs: on a
# shared 2-core CI machine (or with the suite's tests running in parallel) a single case can
# take longer than hypothesis's default 200 ms deadline, which failed the suite with no bug.
settings.register_profile("socbridge", deadline=None)
settings.load_profile("socbridge")
