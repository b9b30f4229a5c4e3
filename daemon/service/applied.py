"""Applied configurations as events: ``admin.config.applied``, its hash, and what changed.

Each configuration the daemon applies (at start, and at each successful
reload) is recorded once in stream ``admin:config`` with the sha256 of its
canonical form (:func:`daemon.service.config.config_hash`): the validated config as
JSON with defaults filled in and paths made absolute. Secrets appear only as
their references (file paths, ``credential:NAME``), never their values, so
the event can hold the whole canonical config. A start whose config hashes
the same as the last applied one appends nothing: restarts do not fill the log.

The event also says which keys changed since the previous applied config and
which tenants' ``sync_enabled`` changed (``sync_reset``): for those, the
config file's value is the latest word and replaces an operator switch
(``socbridge tenants enable|disable``); the fold does that
(:func:`projections.fold._config`). The first config ever applied resets no
switch, so a tenant disabled before the daemon first started stays disabled.

Which keys a reload may change live, and which need a restart, is
:data:`LIVE_KEYS`: everything not listed (store, listener address, the
connectors' connection settings and secrets, the board, poll settings) needs
a restart, and a reload that changes any of them is refused whole.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from daemon.service.config import Config, canonical_config, config_hash
from eventstore import EventStore, NewEvent, RecordedEvent
from projections import kinds

CONFIG_STREAM = "admin:config"
SOURCE = "socbridge.config"

#: Keys (and key prefixes) a reload applies without a restart.
LIVE_KEYS = (
    "tenants",
    "sync",
    "server.allowed_sources",
    "server.admin_sources",
    "connectwise.routing_status",
    "connectwise.unlinked_status",
    "connectwise.solved_status",
    "connectwise.unresolved_status",
    "connectwise.source",
    "connectwise.priority_mapping",
    "connectwise.default_soc_priority",
    "connectwise.note_type_used",
    "connectwise.note_types_sent",
)

_MISSING = object()


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def flat_config(canonical: dict[str, Any]) -> dict[str, Any]:
    """Dotted key -> value of a canonical config; tenants are keyed by name."""
    doc = dict(canonical)
    doc["tenants"] = {t["name"]: t for t in canonical.get("tenants", [])}
    out: dict[str, Any] = {}
    _flatten(doc, "", out)
    return out


def changed_keys(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The dotted keys whose value differs between two canonical configs.

    A tenant added or removed is one key (``tenants.NAME``), not one per field.
    """
    if old is None:
        return []
    a, b = flat_config(old), flat_config(new)
    old_tenants = {t["name"] for t in old.get("tenants", [])}
    new_tenants = {t["name"] for t in new.get("tenants", [])}
    whole = {f"tenants.{name}" for name in old_tenants ^ new_tenants}
    keys = {
        key
        for key in a.keys() | b.keys()
        if a.get(key, _MISSING) != b.get(key, _MISSING)
        and not any(key.startswith(w + ".") for w in whole)
    }
    return sorted(keys | whole)


def needs_restart(keys: list[str]) -> list[str]:
    """Those of ``keys`` a reload cannot apply live."""
    return [k for k in keys if not any(k == p or k.startswith(p + ".") for p in LIVE_KEYS)]


def sync_reset(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Tenants whose configured ``sync_enabled`` changed (or that were added) since ``old``."""
    if old is None:
        return []
    before = {t["name"]: t["sync_enabled"] for t in old.get("tenants", [])}
    return sorted(
        t["name"] for t in new["tenants"] if before.get(t["name"], _MISSING) != t["sync_enabled"]
    )


def applied_event(
    config: Config, path: Path | None, previous: RecordedEvent | None, reason: str
) -> NewEvent:
    """The ``admin.config.applied`` event for ``config`` after ``previous`` (or the first)."""
    canonical = canonical_config(config)
    old = previous.data.get("config") if previous is not None else None
    return NewEvent(
        stream=CONFIG_STREAM,
        type=kinds.CONFIG_APPLIED,
        source=SOURCE,
        data={
            "hash": config_hash(config),
            "previous_hash": previous.data.get("hash") if previous is not None else None,
            "reason": reason,
            "path": str(path) if path is not None else None,
            "tenants": [
                {
                    "name": t.name,
                    "soc_organization_id": t.soc_organization_id,
                    "cw_company_id": t.cw_company_id,
                    "sync_enabled": t.sync_enabled,
                }
                for t in config.tenants
            ],
            "changed": changed_keys(old, canonical),
            "sync_reset": sync_reset(old, canonical),
            "config": canonical,
        },
    )


async def last_applied(store: EventStore) -> RecordedEvent | None:
    """The newest ``admin.config.applied`` event, if any."""
    return await store.last_in_stream(CONFIG_STREAM)


async def record_applied(
    store: EventStore, config: Config, path: Path | None, reason: str
) -> RecordedEvent | None:
    """Append ``admin.config.applied`` unless ``config`` is the last applied one."""
    previous = await last_applied(store)
    if previous is not None and previous.data.get("hash") == config_hash(config):
        return None
    event = applied_event(config, path, previous, reason)
    expected = previous.stream_version if previous is not None else 0
    recorded = await store.append([event], expected_version=expected)
    return recorded[0]


def operator_name(given: str | None = None) -> str:
    """Who an admin event names: ``given`` (``--operator``), else the login name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
