"""A condition that keeps the daemon from being ready: what it is and since when.

A remote that does not answer, a log that cannot be written and a task that is down
each hold one while it lasts; ``/readyz`` lists their descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from eventstore import utc_now


@dataclass(frozen=True)
class Outage:
    reason: str
    since: datetime = field(default_factory=utc_now)

    def describe(self, subject: str) -> str:
        """``'ConnectWise unreachable (…) since 2026-…Z'`` for subject ``'ConnectWise'``."""
        when = self.since.isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"{subject} {self.reason} since {when}"
