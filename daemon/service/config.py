"""The one configuration object: a TOML file, parsed and validated once at start.

``load_config(path)`` reads the file with the stdlib ``tomllib`` and validates
it against pydantic models that refuse unknown keys, so every mistake is
reported with the file, the key and the fix. The resulting :class:`Config` is
passed down explicitly; nothing deeper reads files or the environment.
"""

from __future__ import annotations

import hashlib
import tomllib
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from daemon.connectors.connectwise.settings import ConnectWiseSettings, NoteSection
from daemon.connectors.soc.settings import SocSettings


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and the fix."""


class StoreSettings(BaseModel):
    """``[store]``: where the event log lives and how durable each commit is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Field(
        description="Path of the SQLite event log (created if missing; keep it on local disk).",
    )
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        default="FULL",
        description=(
            "SQLite durability per commit. FULL (default) fsyncs every commit: an append "
            "that returned survives a power cut. NORMAL may lose the last commits on power loss."
        ),
    )


class TenantSettings(BaseModel):
    """``[[tenants]]``: one MSP customer, known to the SOC as an organization (R9)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Short key for the tenant (lower-case letters, digits, - and _).",
    )
    soc_organization_id: int = Field(gt=0, description="The tenant's SOC organization id.")
    cw_company_id: int = Field(gt=0, description="The tenant's ConnectWise company id (R9).")
    sync_enabled: bool = Field(
        default=True,
        description="Sync this tenant; when false it is neither read nor written (R9).",
    )
    note_type_used: NoteSection | None = Field(
        default=None, description="Override of [connectwise] note_type_used for this tenant (R8)."
    )
    note_types_sent: tuple[NoteSection, ...] | None = Field(
        default=None,
        description="Override of [connectwise] note_types_sent for this tenant (R8).",
    )


class ConflictPolicy(BaseModel):
    """``[sync.conflict]``: who wins when both sides changed a field concurrently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["latest", "soc", "cw"] = Field(
        default="latest",
        description="latest: the later change by source time wins, ties go to the SOC.",
    )
    priority: Literal["latest", "soc", "cw"] = Field(
        default="soc", description="Default: the SOC's priority wins."
    )


class SyncSettings(BaseModel):
    """``[sync]``: how the bridge decides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conflict: ConflictPolicy = Field(default_factory=ConflictPolicy)
    checkpoint_every: int = Field(
        default=500, ge=1, description="Save the projections after this many events."
    )


class ServerSettings(BaseModel):
    """``[server]``: the inbound listener for callbacks, webhooks and health checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8443, ge=0, le=65535, description="Port to listen on.")
    install_remote_hooks: bool = Field(
        default=False,
        description=(
            "At start, install the ConnectWise callback and the SOC webhook pointing at "
            "this daemon (idempotent)."
        ),
    )
    tls_cert: Path | None = Field(
        default=None,
        description=(
            "PEM certificate chain the listener serves (R13: TLS 1.2/1.3, the guide's ciphers)."
        ),
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key of tls_cert (readable by the service only)."
    )
    allow_plain_http: bool = Field(
        default=False,
        description=(
            "Serve plain HTTP instead of TLS. Only for demos and tests: refused unless host "
            "is a loopback address."
        ),
    )
    allowed_sources: tuple[IPv4Network | IPv6Network, ...] = Field(
        default=(IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")),
        description=(
            "CIDR ranges allowed to call the callback and webhook routes (R14); add the "
            "vendor's published ranges. Others get 403 and nothing is recorded."
        ),
    )
    admin_sources: tuple[IPv4Network | IPv6Network, ...] = Field(
        default=(IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")),
        description="CIDR ranges allowed to read /healthz, /readyz and /metrics (loopback).",
    )
    admin_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "If set, /healthz, /readyz and /metrics are also served over plain HTTP on "
            "admin_host:admin_port (loopback by default) for local probes and scrapers."
        ),
    )
    admin_host: str = Field(default="127.0.0.1", description="Address of the admin listener.")
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body accepted on any route; larger gets 413.",
    )
    stop_deadline_seconds: float = Field(
        default=20.0,
        gt=0,
        description=(
            "On SIGTERM, how long in-flight deliveries may take to finish; the rest stay "
            "pending in the log and are retried at the next start. Keep below TimeoutStopSec."
        ),
    )

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        if self.allow_plain_http and not _is_loopback(self.host):
            raise ValueError(
                f"allow_plain_http is only allowed with a loopback host, not {self.host!r}; "
                "set tls_cert and tls_key instead"
            )
        return self

    def require_listener_policy(self) -> None:
        """Refuse to serve when neither TLS nor loopback plain HTTP is configured (R13)."""
        if self.tls_cert is None and not self.allow_plain_http:
            raise ValueError(
                "server: no tls_cert/tls_key; set them (R13), or allow_plain_http = true "
                "with a loopback host for demos and tests"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class Config(BaseModel):
    """The whole socbridge configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: StoreSettings
    server: ServerSettings = Field(default_factory=ServerSettings)
    connectwise: ConnectWiseSettings
    soc: SocSettings
    tenants: tuple[TenantSettings, ...] = Field(min_length=1)
    sync: SyncSettings = Field(default_factory=SyncSettings)

    @model_validator(mode="after")
    def _tenants_unique(self) -> Config:
        for attr in ("name", "soc_organization_id", "cw_company_id"):
            values = [getattr(t, attr) for t in self.tenants]
            dupes = sorted({str(v) for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"tenants: {attr} must be unique, repeated: {', '.join(dupes)}")
        return self


def canonical_config(config: Config) -> dict[str, Any]:
    """The validated config as plain JSON data: defaults filled in, paths absolute,
    secrets as their references only (a secret's value is never part of the config)."""
    return config.model_dump(mode="json")


def config_hash(config: Config) -> str:
    """The hash recorded with each applied configuration: sha256 of its canonical form,
    so comments, key order and formatting of the file do not change it."""
    canonical = orjson.dumps(canonical_config(config), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"configuration {path} is invalid:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            msg = (
                "unknown key; remove it or check its spelling "
                "('socbridge config reference' lists every key)"
            )
        elif kind == "missing":
            msg = "required key is missing; add it"
        else:
            msg = error["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_config(path: Path, text: str) -> Config:
    """Validate TOML ``text`` (read from ``path``) into a :class:`Config`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {path} is not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: Config, base: Path) -> Config:
    # Relative paths in the file are relative to the file, not to the cwd.
    store = config.store
    if not store.path.is_absolute():
        store = store.model_copy(update={"path": base / store.path})
    server = config.server
    for key in ("tls_cert", "tls_key"):
        value = getattr(server, key)
        if value is not None and not value.is_absolute():
            server = server.model_copy(update={key: base / value})
    return config.model_copy(update={"store": store, "server": server})


def load_config(path: str | Path) -> Config:
    """Read and validate the configuration file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    return parse_config(path, text)
