"""The sync rules most tests decide with: one tenant (acme), the demo's board and statuses."""

from __future__ import annotations

from daemon.sync.rules import Rules, TenantRule

CW_PRIORITIES = {
    "urgent": "Priority 1 - Emergency Response",
    "high": "Priority 2 - Quick Response",
    "normal": "Priority 3 - Normal Response",
    "low": "Priority 4 - Schedule Maintenance",
}


RULES = Rules(
    tenants={"acme": TenantRule("acme", 9001, 250, True, "Discussion", frozenset({"Discussion"}))},
    board="SOC Incidents",
    routing_status="Send to SOC",
    unlinked_status="Unlinked",
    solved_status="Solved",
    unresolved_status="Unresolved",
    source="SOC Platform",
    priority_mapping=CW_PRIORITIES,
    default_soc_priority="normal",
)
