"""The one configuration object: a TOML file, parsed and validated once at start.

``load_config(path)`` reads the file with the stdlib ``tomllib`` and validates
it against pydantic models that refuse unknown keys, so every mistake is
reported with the file, the key and the fix. The resulting :class:`Config` is
passed down explicitly; nothing deeper reads files or the environment.
"""

from __future__ import annotations

import difflib
import hashlib
import tomllib
import typing
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
    anchors_file: Path | None = Field(
        default=None,
        description=(
            "Append-only file the log's head (position and hash) is written to at start, at a "
            "clean stop and every anchor_interval_seconds, so a log edited and rehashed fails "
            "verify. Default: beside the log, its name plus .anchors."
        ),
    )
    anchor_interval_seconds: float = Field(
        default=300,
        gt=0,
        description="How often the head is anchored while the log grows (seconds).",
    )

    @property
    def anchors(self) -> Path:
        """Where the anchors are written (``anchors_file``, or beside the log)."""
        return self.anchors_file or self.path.with_name(self.path.name + ".anchors")


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


class OutboxSettings(BaseModel):
    """``[outbox]``: how deliveries the remote failed for a time are retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_backoff_seconds: float = Field(
        default=300.0,
        ge=1.0,
        le=3600.0,
        description=(
            "Longest wait between two attempts of a command the remote failed for a reason "
            "time can fix (network, 5xx, 429): retried for as long as it takes, 1 s "
            "doubling up to this."
        ),
    )


class HealthSettings(BaseModel):
    """``[health]``: when ``/readyz`` reports the daemon not ready."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pending_age_seconds: float = Field(
        default=600.0,
        ge=1.0,
        description=(
            "Not ready while a command that should be going out has waited longer than this "
            "(commands held by a tenant switch or a removal do not count)."
        ),
    )
    max_decision_lag_events: int = Field(
        default=10_000,
        ge=1,
        description="Not ready while sync has this many events of the log still to decide.",
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
        default=None,
        description="PEM private key of tls_cert (mode 0640, root:socbridge: the service's group).",
    )
    allow_plain_http: bool = Field(
        default=False,
        description=(
            "Serve plain HTTP instead of TLS: behind a reverse proxy on this host that "
            "terminates TLS, or for demos and tests. Refused unless host is a loopback address."
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
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description=(
            "A connection must send a complete request head within this many seconds of "
            "opening, or of its previous response (keep-alive), or it is closed: idle and "
            "slow connections cannot hold the listener's file descriptors."
        ),
    )
    max_connections: int = Field(
        default=4096,
        ge=16,
        description=(
            "Open connections the public listener keeps at most; past it a new one is answered "
            "503 with Retry-After and closed, so the process keeps file descriptors for its log "
            "and the desks (the unit's LimitNOFILE is 65536). The admin listener is not counted."
        ),
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
                "with a loopback host behind a reverse proxy (or for demos and tests)"
            )


class AdminSettings(BaseModel):
    """``[admin]``: the operator console, web pages served on their own listener (no
    ``[admin]`` section: no console)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(
        default="127.0.0.1:8790",
        description=(
            "HOST:PORT of the console's listener ([::1]:8790 for IPv6). Loopback by default: "
            "open it from elsewhere over an SSH tunnel. Any other address needs token, "
            "tls_cert and tls_key."
        ),
    )
    token: str | None = Field(
        default=None,
        description=(
            "Secret reference (a file, or credential:NAME) holding the console's tokens, one "
            "per line as NAME:TOKEN (a bare TOKEN is named after the file); the name is "
            "recorded with every action taken with it. When set, every page asks for a token."
        ),
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain the console serves (with tls_key)."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")

    @property
    def host(self) -> str:
        return self._split()[0]

    @property
    def port(self) -> int:
        return self._split()[1]

    def _split(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @model_validator(mode="after")
    def _loopback_or_guarded(self) -> AdminSettings:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen = {self.listen!r} is not HOST:PORT (e.g. 127.0.0.1:8790)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        if not _is_loopback(self.host):
            lacking = [
                name
                for name, value in (("token", self.token), ("tls_cert", self.tls_cert))
                if value is None
            ]
            if lacking:
                raise ValueError(
                    f"the console listens on {self.host}, not a loopback address, "
                    f"without {' and '.join(lacking)}; set token, tls_cert and tls_key, or "
                    "listen on 127.0.0.1 and open it over an SSH tunnel"
                )
        return self


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
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    admin: AdminSettings | None = None

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
        lines.append(f"  {key}: {_explain(error)}")
    return "\n".join(lines)


#: What a value of each kind must be, by pydantic's error type, in an operator's words.
_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text in quotes",
    "list_type": 'a list, like ["a", "b"]',
    "dict_type": "a table of keys",
    "model_type": "a table of keys",
}


def _explain(error: Any) -> str:
    """One error as a sentence that says what the key wants and how to fix it."""
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        hint = f"did you mean `{near[0]}`?" if near else "remove it or check its spelling"
        return f"unknown key; {hint} ('socbridge config reference' lists every key)"
    if kind == "missing":
        return "required key is missing; add it"
    expected = _EXPECTED.get(kind)
    if expected is not None:
        if expected == "a number" and str(loc[-1]).endswith("_seconds"):
            expected = "a number of seconds"
        return f"expected {expected}, got {error.get('input')!r}"
    # A validator's own sentence, without pydantic's "Value error, " in front of it.
    return str(error["msg"]).removeprefix("Value error, ")


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts at ``loc`` (a section, or a tenant's table)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue  # an entry of an array of tables: the same model as the array's
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _model_of(annotation: Any) -> Any:
    """The pydantic model an annotation holds (itself, or a list's or an optional's)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


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
    if store.anchors_file is not None and not store.anchors_file.is_absolute():
        store = store.model_copy(update={"anchors_file": base / store.anchors_file})
    server, admin = config.server, config.admin
    for key in ("tls_cert", "tls_key"):
        value = getattr(server, key)
        if value is not None and not value.is_absolute():
            server = server.model_copy(update={key: base / value})
        value = getattr(admin, key, None)
        if admin is not None and value is not None and not value.is_absolute():
            admin = admin.model_copy(update={key: base / value})
    return config.model_copy(update={"store": store, "server": server, "admin": admin})


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
