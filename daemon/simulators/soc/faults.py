"""Fault knobs of the SOC simulator: make the desk misbehave on purpose.

API faults apply to every ``/api/v2`` request before authentication: added
latency, 429 with ``Retry-After`` (../shared/reference/zendesk/NOTES.md §4.2,
cited below as NOTES §x), and 5xx; or after the request took effect (a 5xx
replacing the reply: the client cannot know it worked). Webhook faults apply
per delivery: dropped, duplicated, or reordered (the later change delivered
first). Each fault can be armed for the next N requests/deliveries
(deterministic, for tests) or as a ratio (random, seeded, for rehearsals). A
real per-minute request limit can also be set, as the plans in §4.2 have.

Knobs are set from CLI flags at start and changed live through the admin
endpoint ``GET``/``PATCH /_sim/faults`` (JSON body with any of the fields of
:class:`FaultSettings`).
"""

from __future__ import annotations

import random
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.simulators.soc.errors import SimError, server_error, too_many_requests


class FaultSettings(BaseModel):
    """The knobs; every field can be changed through ``PATCH /_sim/faults``."""

    model_config = ConfigDict(extra="forbid")

    latency: float = Field(
        default=0.0, ge=0, le=60, description="Seconds added to every API request."
    )
    rate_limit_next: int = Field(
        default=0, ge=0, description="Answer the next N API requests with 429."
    )
    rate_limit_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Share of API requests given 429."
    )
    retry_after: int = Field(
        default=1, ge=0, le=3600, description="Retry-After seconds sent with a 429."
    )
    rate_limit_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="A real request budget per minute (e.g. 700), like a plan limit.",
    )
    error_next: int = Field(
        default=0, ge=0, description="Answer the next N API requests with a 5xx."
    )
    error_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Share of API requests given a 5xx."
    )
    error_after_commit_next: int = Field(
        default=0,
        ge=0,
        description="Carry out the next N API requests, then answer 5xx (lost reply).",
    )
    error_status: Literal[500, 502, 503, 504] = Field(default=503, description="Which 5xx to send.")
    webhook_drop_next: int = Field(
        default=0, ge=0, description="Drop the next N webhook deliveries."
    )
    webhook_drop_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Share of deliveries dropped."
    )
    webhook_duplicate_next: int = Field(
        default=0, ge=0, description="Send the next N deliveries twice."
    )
    webhook_duplicate_ratio: float = Field(default=0.0, ge=0, le=1, description="Share sent twice.")
    webhook_reorder: bool = Field(
        default=False, description="Deliver each pair of changes in reverse."
    )
    seed: int | None = Field(
        default=None, description="Seed for the ratio knobs (repeatable runs)."
    )


class FaultInjector:
    """Decides, request by request and delivery by delivery, what goes wrong."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self.settings = settings or FaultSettings()
        self._rng = random.Random(self.settings.seed)
        self._window_start = time.monotonic()
        self._window_count = 0
        self.api_faults_injected = 0

    def update(self, patch: dict[str, object]) -> FaultSettings:
        """Apply a partial change; invalid values raise pydantic's ValidationError."""
        merged = FaultSettings.model_validate({**self.settings.model_dump(), **patch})
        if merged.seed != self.settings.seed:
            self._rng = random.Random(merged.seed)
        self.settings = merged
        return merged

    def rate_limit_headers(self) -> dict[str, str]:
        limit = self.settings.rate_limit_per_minute or 700
        remaining = max(0, limit - self._window_count)
        return {"X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining)}

    def api_fault(self) -> SimError | None:
        """The error to answer this API request with, if any (counts it)."""
        s = self.settings
        if s.rate_limit_next > 0:
            self.settings = s.model_copy(update={"rate_limit_next": s.rate_limit_next - 1})
            return self._injected(too_many_requests(s.retry_after))
        if s.error_next > 0:
            self.settings = s.model_copy(update={"error_next": s.error_next - 1})
            return self._injected(server_error(s.error_status))
        if s.rate_limit_ratio and self._rng.random() < s.rate_limit_ratio:
            return self._injected(too_many_requests(s.retry_after))
        if s.error_ratio and self._rng.random() < s.error_ratio:
            return self._injected(server_error(s.error_status))
        if s.rate_limit_per_minute is not None:
            now = time.monotonic()
            if now - self._window_start >= 60:
                self._window_start, self._window_count = now, 0
            if self._window_count >= s.rate_limit_per_minute:
                wait = max(1, int(60 - (now - self._window_start)) + 1)
                return too_many_requests(wait)
            self._window_count += 1
        return None

    def post_commit_fault(self) -> SimError | None:
        """The error that replaces this request's reply after it took effect, if any."""
        s = self.settings
        if s.error_after_commit_next > 0:
            self.settings = s.model_copy(
                update={"error_after_commit_next": s.error_after_commit_next - 1}
            )
            return self._injected(server_error(s.error_status))
        return None

    def _injected(self, error: SimError) -> SimError:
        self.api_faults_injected += 1
        return error

    def webhook_plan(self) -> Literal["deliver", "drop", "duplicate"]:
        """What to do with the next webhook delivery."""
        s = self.settings
        if s.webhook_drop_next > 0:
            self.settings = s.model_copy(update={"webhook_drop_next": s.webhook_drop_next - 1})
            return "drop"
        if s.webhook_duplicate_next > 0:
            self.settings = s.model_copy(
                update={"webhook_duplicate_next": s.webhook_duplicate_next - 1}
            )
            return "duplicate"
        if s.webhook_drop_ratio and self._rng.random() < s.webhook_drop_ratio:
            return "drop"
        if s.webhook_duplicate_ratio and self._rng.random() < s.webhook_duplicate_ratio:
            return "duplicate"
        return "deliver"
