"""The ``[soc]`` configuration section: how socbridge reaches the SOC desk
(Zendesk Support API v2 shape), how hard it may call it, how webhooks are
installed and verified, and how reconciliation polling runs.

Secrets are references (a file path or ``credential:NAME``) resolved by
:func:`daemon.service.secrets.load_secret`, never held in the model. The webhook
signing secret reference is where ``socbridge webhooks install`` *writes* the
secret (mode 0600), so it must be a file path, not a systemd credential.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator
from yarl import URL

from daemon.connectors.remote import Limits, RetryPolicy, is_loopback_host
from daemon.service.secrets import Secret, load_secret


class SocWebhookSettings(BaseModel):
    """``[soc.webhook]``: the SOC webhook subscription and its verification."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_url: str = Field(
        description=(
            "Public URL the SOC desk posts webhooks to: this daemon's route "
            "POST /webhooks/soc as reachable from the SOC, e.g. "
            "https://socbridge.msp.example/webhooks/soc."
        ),
    )
    signing_secret: str = Field(
        description=(
            "File path where 'socbridge webhooks install' stores the webhook signing secret "
            "(written mode 0600) and where the intake reads it from."
        ),
    )
    name: str = Field(
        default="socbridge",
        min_length=1,
        description="Name of the webhook socbridge owns on the SOC desk (found by name).",
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest webhook body accepted (413 above)."
    )
    tolerance_seconds: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Oldest signature timestamp accepted (seconds); older is refused as a replay.",
    )
    max_future_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How far in the future a signature timestamp may be (clock skew allowance).",
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("public_url must be an http(s) URL, e.g. https://host/webhooks/soc")
        if url.scheme == "http" and not is_loopback_host(url.host):
            raise ValueError("public_url must use https (http is allowed only for loopback)")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _check_secret_ref(cls, value: str) -> str:
        if value.startswith("credential:"):
            raise ValueError(
                "signing_secret must be a file path: 'webhooks install' writes it, and systemd "
                "credentials are read-only"
            )
        return value


class SocSettings(BaseModel):
    """``[soc]``: the SOC platform's ticket desk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description=(
            "Base URL of the SOC desk, e.g. https://soc.zendesk.com (https required except "
            "for a loopback simulator); the API lives under {url}/api/v2."
        ),
    )
    email: str = Field(min_length=3, description="Email of the SOC API user (admin role).")
    api_token: str = Field(description="Secret reference to the SOC API token.")
    requests_per_second: float = Field(default=5.0, gt=0, description="API request rate cap.")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Parallel API requests.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per-attempt timeout.")
    max_attempts: int = Field(default=6, ge=1, le=20, description="Attempts per API call.")
    backoff_base_seconds: float = Field(
        default=0.5, ge=0, description="First retry delay after a 5xx or timeout (doubles)."
    )
    max_retry_after_seconds: float = Field(
        default=120.0, ge=0, description="Longest Retry-After waited out before giving up."
    )
    poll_interval_seconds: float = Field(
        default=60.0, gt=0, description="Seconds between reconciliation polls."
    )
    poll_lookback_seconds: int = Field(
        default=3600,
        ge=60,
        description="On the first poll (no cursor yet), how far back the export starts.",
    )
    webhook: SocWebhookSettings

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("url must be an http(s) URL such as https://soc.zendesk.com")
        if url.user or url.password:
            raise ValueError("url must not embed credentials; use email and api_token")
        if url.scheme == "http" and not is_loopback_host(url.host):
            raise ValueError("url must use https (http is allowed only for a loopback simulator)")
        return value.rstrip("/")

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v2"

    def limits(self) -> Limits:
        return Limits(self.requests_per_second, self.max_concurrency, self.timeout_seconds)

    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.backoff_base_seconds,
            max_retry_after=self.max_retry_after_seconds,
        )

    def load_token(self, environ: Mapping[str, str] | None = None) -> Secret:
        """The API token from its secret file."""
        return load_secret(self.api_token, environ)
