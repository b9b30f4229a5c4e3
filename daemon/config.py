"""The one configuration object: a TOML file, parsed and validated once at start.

``load_config(path)`` reads the file with the stdlib ``tomllib`` and validates
it against pydantic models that refuse unknown keys, so every mistake is
reported with the file, the key and the fix. The resulting :class:`Config` is
passed down explicitly; nothing deeper reads files or the environment.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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


class Config(BaseModel):
    """The whole socbridge configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: StoreSettings


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"configuration {path} is invalid:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against the README"
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
    return config.model_copy(update={"store": store})


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
