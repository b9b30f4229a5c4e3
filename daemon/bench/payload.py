"""A realistic event body for benchmarks: a ConnectWise ticket observation."""

from __future__ import annotations

from typing import Any


def ticket_observation(i: int) -> dict[str, Any]:
    return {
        "id": 100000 + i,
        "summary": f"Suspicious sign-in for user{i % 97}@acme.example from new country",
        "status": {"id": 502, "name": "Send to SOC"},
        "priority": {"id": 2, "name": "Priority 2 - High"},
        "board": {"id": 41, "name": "SOC Incidents"},
        "company": {"id": 250, "identifier": "AcmeCorp"},
        "updated_by": "socbridge-api",
        "last_updated": "2026-11-29T04:00:00Z",
        "via": "callback",
    }
