"""The bridge's read model: links, their fields, notes, unlinked tickets and the outbox.

Everything here is plain data (dicts, lists, str, int), so a state can be
written as JSON rows, read back, and compared for equality: rebuilding from
position 0 must give exactly the state that live folding gave.

Per link and field (``status``, ``priority``) the state keeps the last value
known on each side (``cw``, ``soc``), the last value both sides agreed on
(``base``), when each side last changed it by hand (``cw_at``, ``soc_at``,
source timestamps), and the values socbridge has written or is writing to a
side and expects to see come back, in order (``expect_cw``, ``expect_soc``):
that is how an echo is told from a human change, and a concurrent change from
a plain one, even with several writes to one side in flight. Each expected
write is also known by its command id (``expect_cw_ids``, ``expect_soc_ids``,
same order): its delivery settles exactly that write and the ones before it,
not a later write of the same value. ``cw_ours`` / ``soc_ours`` say whether the
side's known value was written there by socbridge (a copy of the other side's,
not a person's change on that side).

Source times have one-second resolution, so each field also keeps, per side,
the newest source time seen (``cw_seen``, ``soc_seen``), the values recently
written there (``wrote_cw``, ``wrote_soc``) and the log position where the
side's known value was last set or confirmed (``cw_pos``, ``soc_pos``): an
observation from the same second as the known value, with another value, is
ambiguous unless it is a fresh fetch read after that position (see
``daemon/sync/decide.py``). These keys appear once first set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FIELDS = ("status", "priority")
SIDES = ("cw", "soc")


def later(a: str | None, b: str | None) -> int:
    """Compare two source timestamps (ISO 8601): 1 when ``a`` is later, -1 when earlier,
    0 when equal; an unknown time counts as the earliest."""
    if a is None or b is None:
        return 0 if a == b else (1 if b is None else -1)
    ta = datetime.fromisoformat(a.replace("Z", "+00:00"))
    tb = datetime.fromisoformat(b.replace("Z", "+00:00"))
    return (ta > tb) - (ta < tb)


def other(side: str) -> str:
    return "soc" if side == "cw" else "cw"


def new_field(cw: str | None = None, soc: str | None = None) -> dict[str, Any]:
    return {
        "cw": cw,
        "soc": soc,
        "base": cw if cw == soc else None,
        "cw_at": None,
        "soc_at": None,
        "expect_cw": [],
        "expect_soc": [],
        "expect_cw_ids": [],
        "expect_soc_ids": [],
    }


def new_link(link_id: str, tenant: str, origin: str, position: int) -> dict[str, Any]:
    return {
        "link_id": link_id,
        "tenant": tenant,
        "origin": origin,
        "cw_id": None,
        "soc_id": None,
        "state": "requested",
        "requested_at": position,
        "linked_at": None,
        "unlinked_at": None,
        "unlinked_reason": None,
        "fields": {name: new_field() for name in FIELDS},
        # note key ("cw:{note id}" / "soc:{comment id}") -> mirror key, or "pending"
        "notes": {},
    }


@dataclass
class BridgeState:
    """The folded state of the whole log up to ``position``."""

    position: int = 0
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_cw: dict[str, str] = field(default_factory=dict)
    by_soc: dict[str, str] = field(default_factory=dict)
    #: ConnectWise ticket ids that were unlinked: never linked again (R3).
    unlinked: dict[str, int] = field(default_factory=dict)
    #: command id -> command (kind, link, params, issued position, attempts, last error)
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: command id -> the abandoned command and why (for the audit)
    abandoned: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: tenant -> enabled, for tenants switched by the operator (overrides the config)
    tenant_switches: dict[str, bool] = field(default_factory=dict)
    conflicts: int = 0
    removed: bool = False
    config_hash: str | None = None

    def link_for(self, side: str, ticket_id: int | str) -> dict[str, Any] | None:
        index = self.by_cw if side == "cw" else self.by_soc
        link_id = index.get(str(ticket_id))
        return self.links.get(link_id) if link_id else None

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "links": self.links,
            "by_cw": self.by_cw,
            "by_soc": self.by_soc,
            "unlinked": self.unlinked,
            "outbox": self.outbox,
            "abandoned": self.abandoned,
            "tenant_switches": self.tenant_switches,
            "conflicts": self.conflicts,
            "removed": self.removed,
            "config_hash": self.config_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BridgeState:
        return cls(
            position=data["position"],
            links=data["links"],
            by_cw=data["by_cw"],
            by_soc=data["by_soc"],
            unlinked=data["unlinked"],
            outbox=data["outbox"],
            abandoned=data["abandoned"],
            tenant_switches=data["tenant_switches"],
            conflicts=data["conflicts"],
            removed=data["removed"],
            config_hash=data["config_hash"],
        )
