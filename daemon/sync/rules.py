"""The sync rules as data: what the configuration says about deciding, and nothing else.

:class:`Rules` is built once from the :class:`~daemon.service.config.Config` and
passed to the pure decision functions, so a decision depends only on the log
and these rules (same log + same rules = same decisions), and a replay can
swap in another conflict policy to preview what it would have decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from daemon.service.config import Config

SOC_SOLVED = frozenset({"solved", "closed"})
SOC_PRIORITIES = ("urgent", "high", "normal", "low")


@dataclass(frozen=True)
class TenantRule:
    name: str
    soc_organization_id: int
    cw_company_id: int
    sync_enabled: bool
    note_type_used: str
    note_types_sent: frozenset[str]


@dataclass(frozen=True)
class Rules:
    tenants: Mapping[str, TenantRule]
    board: str
    routing_status: str
    unlinked_status: str | None
    solved_status: str
    unresolved_status: str
    source: str | None
    #: SOC priority -> ConnectWise priority name (R6)
    priority_mapping: Mapping[str, str]
    default_soc_priority: str
    #: socbridge's own ConnectWise member: a ticket it updated last is a possible echo
    api_member: str | None = None
    policy: Mapping[str, str] = field(
        default_factory=lambda: {"status": "latest", "priority": "soc"}
    )

    def tenant_for_org(self, organization_id: int | None) -> TenantRule | None:
        for tenant in self.tenants.values():
            if tenant.soc_organization_id == organization_id:
                return tenant
        return None

    def soc_priority_for_cw(self, cw_priority: str | None) -> str:
        """The SOC priority whose mapping points at this ConnectWise priority (R6)."""
        for soc, cw in self.priority_mapping.items():
            if cw == cw_priority:
                return soc
        return self.default_soc_priority

    def cw_status_is_solved(self, status: str | None) -> bool:
        return status is not None and status == self.solved_status

    def with_policy(self, **policy: str) -> Rules:
        """These rules with some conflict policies replaced (for a replay preview)."""
        return replace(self, policy={**self.policy, **policy})


def rules_from_config(config: Config) -> Rules:
    cw = config.connectwise
    tenants = {
        t.name: TenantRule(
            name=t.name,
            soc_organization_id=t.soc_organization_id,
            cw_company_id=t.cw_company_id,
            sync_enabled=t.sync_enabled,
            note_type_used=t.note_type_used or cw.note_type_used,
            note_types_sent=frozenset(
                t.note_types_sent if t.note_types_sent is not None else cw.note_types_sent
            ),
        )
        for t in config.tenants
    }
    return Rules(
        tenants=tenants,
        board=cw.board,
        routing_status=cw.routing_status,
        unlinked_status=cw.unlinked_status,
        solved_status=cw.solved_status,
        unresolved_status=cw.unresolved_status,
        source=cw.source,
        priority_mapping=dict(cw.priority_mapping),
        default_soc_priority=cw.default_soc_priority,
        api_member=cw.api_member,
        policy={
            "status": config.sync.conflict.status,
            "priority": config.sync.conflict.priority,
        },
    )
