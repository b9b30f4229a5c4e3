"""Fault knobs of the ConnectWise simulator, set by CLI flags or ``/_sim/faults``.

API faults: queued rules that answer the next N matching requests with an
error status (429 carries ``Retry-After``), and a fixed added latency. Callback
faults: drop, duplicate or hold back (reorder) the next N callbacks, extra
delivery delay, and random drop / duplicate rates for demos (seeded, so a
rehearsal is repeatable). The simulator's own admin endpoints are never
faulted.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


class FaultConfigError(ValueError):
    """A fault setting was not understood; the message names it."""


@dataclass
class ApiFault:
    """Answer the next ``count`` matching API requests with ``status``."""

    status: int
    count: int = 1
    retry_after: str | None = None
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path_contains or self.path_contains.lower() in path.lower()


@dataclass
class Faults:
    """All fault settings; mutated in place by the admin endpoint."""

    latency: float = 0.0
    api: list[ApiFault] = field(default_factory=list)
    drop_callbacks: int = 0
    duplicate_callbacks: int = 0
    reorder_callbacks: int = 0
    callback_delay: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def take_api_fault(
        self, method: str, path: str, *, named_only: bool = False
    ) -> ApiFault | None:
        """The next rule that matches, used up by one; with ``named_only``, only rules that
        name a path (the callback-key route is faulted only when a rule asks for it)."""
        for rule in self.api:
            if named_only and not rule.path_contains:
                continue
            if rule.matches(method, path):
                rule.count -= 1
                if rule.count <= 0:
                    self.api.remove(rule)
                return rule
        return None

    def callback_action(self) -> str:
        """What to do with the next callback: send, drop, duplicate or hold."""
        if self.drop_callbacks > 0:
            self.drop_callbacks -= 1
            return "drop"
        if self.duplicate_callbacks > 0:
            self.duplicate_callbacks -= 1
            return "duplicate"
        if self.reorder_callbacks > 0:
            self.reorder_callbacks -= 1
            return "hold"
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return "drop"
        if self.duplicate_rate and self.rng.random() < self.duplicate_rate:
            return "duplicate"
        return "send"

    def update(self, doc: Mapping[str, Any]) -> None:
        """Apply a JSON document of settings (unknown keys are refused)."""
        known = {
            "latency", "api", "drop_callbacks", "duplicate_callbacks", "reorder_callbacks",
            "callback_delay", "drop_rate", "duplicate_rate", "seed",
        }  # fmt: skip
        unknown = set(doc) - known
        if unknown:
            raise FaultConfigError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        try:
            for key, value in doc.items():
                if key == "api":
                    self.api.extend(ApiFault(**rule) for rule in value)
                elif key == "seed":
                    self.seed = int(value)
                    self.rng.seed(self.seed)
                elif key in ("latency", "callback_delay", "drop_rate", "duplicate_rate"):
                    setattr(self, key, float(value))
                else:
                    setattr(self, key, int(value))
        except (TypeError, ValueError) as exc:
            raise FaultConfigError(f"bad fault setting: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("rng")
        return doc


def parse_api_fault(spec: str) -> ApiFault:
    """CLI form ``STATUS[xCOUNT][:RETRY_AFTER]``, e.g. ``429x3:2`` or ``503x5``."""
    head, _, retry_after = spec.partition(":")
    status, _, count = head.partition("x")
    try:
        return ApiFault(int(status), int(count or 1), retry_after or None)
    except ValueError:
        raise FaultConfigError(
            f"bad --fail {spec!r}: use STATUS[xCOUNT][:RETRY_AFTER], e.g. 429x3:2"
        ) from None
