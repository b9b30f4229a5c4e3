"""The ``[connectwise]`` configuration section: how socbridge reaches ConnectWise
Manage, which board and statuses it syncs, and how hard it may call the API.

Names (board, statuses, priorities, source) are written as an MSP sees them in
ConnectWise and in the vendor guide's setup screens; ``socbridge validate``
checks that each exists. Keys are secret references (a file path or
``credential:NAME``), resolved by :meth:`ConnectWiseSettings.load_keys`, never
stored in the model. R4 (the unlinked status is neither the routing status nor
in the status mapping) is enforced here, so a bad file is refused at load.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

from daemon.connectors.remote import Limits, RetryPolicy, is_loopback_host
from daemon.service.secrets import Secret, load_secret

NoteSection = Literal["Discussion", "Internal Analysis", "Resolution"]
SOC_PRIORITIES = ("urgent", "high", "normal", "low")


@dataclass(frozen=True)
class ApiKeys:
    """The API member's key pair, loaded from their secret files."""

    public_key: Secret
    private_key: Secret


class ConnectWiseSettings(BaseModel):
    """``[connectwise]``: the ConnectWise Manage side of socbridge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_url: str = Field(
        description=(
            "ConnectWise URL as you open it in a browser, e.g. https://na.myconnectwise.net "
            "(https required except for a loopback simulator). Its host is also the only host "
            "socbridge fetches callback signing keys from."
        ),
    )
    company_id: str = Field(
        min_length=1,
        description="Company identifier typed on the ConnectWise sign-in page (the MSP's).",
    )
    public_key: str = Field(description="Secret reference to the API member's public key.")
    private_key: str = Field(description="Secret reference to the API member's private key.")
    client_id: str = Field(
        description="Integration clientId GUID from https://developer.connectwise.com/ClientID.",
    )
    api_member: str = Field(
        min_length=1,
        description=(
            "Identifier of the API member the keys belong to; callbacks whose MemberId is this "
            "member are socbridge's own writes coming back."
        ),
    )
    api_version: str = Field(
        default="2025.16",
        pattern=r"^\d{4}\.\d{1,2}$",
        description="Pinned API version sent in the Accept header (response shape).",
    )
    codebase: str | None = Field(
        default=None,
        description=(
            "Codebase such as 'v2025_1/'; leave unset to discover it from "
            "/login/companyinfo/{company_id}."
        ),
    )
    board: str = Field(default="SOC Incidents", description="Integration service board (R2).")
    routing_status: str = Field(
        default="Send to SOC", description="Status that starts syncing a ticket (R1)."
    )
    unlinked_status: str | None = Field(
        default="Unlinked", description="Status that stops syncing a ticket for good (R3)."
    )
    solved_status: str = Field(default="Solved", description="Status mapped to SOC solved (R7).")
    unresolved_status: str = Field(
        default="Unresolved", description="Status for a ticket reopened after solved (R7)."
    )
    source: str | None = Field(
        default=None, description="Source set on tickets the SOC creates (R5); unset for none."
    )
    priority_mapping: dict[str, str] = Field(
        default_factory=lambda: {
            "urgent": "Priority 1 - Emergency Response",
            "high": "Priority 2 - Quick Response",
            "normal": "Priority 3 - Normal Response",
            "low": "Priority 4 - Schedule Maintenance",
        },
        description="SOC priority -> ConnectWise priority name, for all four SOC priorities (R6).",
    )
    default_soc_priority: Literal["urgent", "high", "normal", "low"] = Field(
        default="normal",
        description="SOC priority for a ConnectWise priority no mapping points at (R6).",
    )
    note_type_used: NoteSection = Field(
        default="Discussion", description="Note section SOC replies are written to (R8)."
    )
    note_types_sent: tuple[NoteSection, ...] = Field(
        default=("Discussion",), description="Note sections that are sent to the SOC (R8)."
    )
    public_callback_url: str | None = Field(
        default=None,
        description="Public https URL ConnectWise posts callbacks to (callbacks install).",
    )
    callback_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=16_777_216, description="Largest callback body accepted."
    )
    signing_key_ttl_seconds: float = Field(
        default=3600, gt=0, description="How long a fetched callback signing key is reused."
    )
    poll_interval_seconds: float = Field(
        default=300, gt=0, description="Reconciliation poll period for missed callbacks."
    )
    poll_initial_lookback_hours: float | None = Field(
        default=72,
        gt=0,
        description=(
            "On the very first poll (no watermark yet), look back only this many hours, so "
            "years of closed tickets on the board are not imported; unset for full history."
        ),
    )
    requests_per_second: float = Field(default=5.0, gt=0, description="API request rate cap.")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Parallel API requests.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per-attempt timeout.")
    max_attempts: int = Field(default=6, ge=1, le=20, description="Attempts per API request.")
    max_retry_delay_seconds: float = Field(
        default=60.0, gt=0, description="Longest backoff between attempts."
    )

    @field_validator("site_url")
    @classmethod
    def _check_site_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("https", "http") or not url.host:
            raise ValueError("must be an absolute URL such as https://na.myconnectwise.net")
        if url.user or url.password or url.query_string:
            raise ValueError("must not contain credentials or a query string")
        if url.scheme == "http" and not is_loopback_host(url.host):
            raise ValueError("must use https (plain http is allowed only for a loopback simulator)")
        return str(url.with_path("/")).rstrip("/")

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError("must be the clientId GUID issued by ConnectWise") from None
        return value

    @field_validator("codebase")
    @classmethod
    def _check_codebase(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip("/")
        if not value or "/" in value:
            raise ValueError("must look like 'v2025_1/' (one path segment)")
        return value + "/"

    @model_validator(mode="after")
    def _check_rules(self) -> ConnectWiseSettings:
        missing = [p for p in SOC_PRIORITIES if p not in self.priority_mapping]
        extra = [p for p in self.priority_mapping if p not in SOC_PRIORITIES]
        if missing or extra:
            raise ValueError(
                f"priority_mapping must map exactly {', '.join(SOC_PRIORITIES)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        if self.unlinked_status is not None:
            clash = [
                name
                for name, status in (
                    ("routing_status", self.routing_status),
                    ("solved_status", self.solved_status),
                    ("unresolved_status", self.unresolved_status),
                )
                if status.casefold() == self.unlinked_status.casefold()
            ]
            if clash:  # R4
                raise ValueError(
                    f"unlinked_status {self.unlinked_status!r} is also used as "
                    f"{' and '.join(clash)}; the unlinked status cannot be used for ticket "
                    "routing or status mapping: choose a different status"
                )
        if self.public_callback_url is not None:
            url = URL(self.public_callback_url)
            if url.scheme not in ("https", "http") or not url.host:
                raise ValueError("public_callback_url must be an absolute https URL")
        return self

    @property
    def host(self) -> str:
        """The ConnectWise host (the only host signing keys are fetched from)."""
        host = URL(self.site_url).host
        assert host is not None  # guaranteed by _check_site_url
        return host

    @property
    def limits(self) -> Limits:
        return Limits(self.requests_per_second, self.max_concurrency, self.timeout_seconds)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=0.5,
            max_delay=self.max_retry_delay_seconds,
            max_retry_after=max(120.0, self.max_retry_delay_seconds),
        )

    def load_keys(self, environ: Mapping[str, str] | None = None) -> ApiKeys:
        """Read both keys from their secret references (raises SecretError)."""
        return ApiKeys(
            load_secret(self.public_key, environ), load_secret(self.private_key, environ)
        )
