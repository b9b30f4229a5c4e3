"""The ConnectWise simulator's seed data: the shared demo fixture.

Both simulators and the demo agree on these (the SOC simulator's side is in
``daemon/simulators/soc``):

Tenants (the SOC side maps them to organizations 9001 and 9002):

- MSP login company (``CompanyId`` in callbacks): ``demo_msp``, company record id 2.
- tenant ``acme``: company id 250, identifier ``AcmeCorp``, "ACME Corporation" (SOC org 9001).
- tenant ``globex``: company id 251, identifier ``Globex``, "Globex Inc" (SOC org 9002).
- not a tenant: company id 260, identifier ``Initech``, "Initech LLC" (its tickets are ignored).
- integration board "SOC Incidents", id 41, statuses New 410 (default), Send to SOC 411,
  In Progress 412, Solved 413 (closed), Unresolved 414, Unlinked 415.
- another board "Help Desk", id 1 (New 11, Closed 12).
- priorities 1 "Priority 1 - Emergency Response" to 4 "Priority 4 - Schedule Maintenance"
  (3 is the default); sources 2 Email, 3 Phone, 9 "SOC Platform".
- API member id 243 ``socbridge``, role 31 "SOC Integration" holding exactly the guide's
  permissions; technician id 150 ``jsmith``, role 1 "Admin".

The API keys below are demo values for the simulator only; they open nothing
real. The codebase is ``v2025_1/`` as seen in real callback hrefs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.connectors.connectwise.permissions import GUIDE_PERMISSIONS, GUIDE_TABLE_SETUP

CODEBASE = "v2025_1/"
LOGIN_COMPANY = "demo_msp"
CLIENT_ID = "3c5b2a9e-7f1d-4e8a-9b6c-0d2e4f6a8b1c"
API_VERSION = "2025.16"

API_MEMBER_ID = 243
API_MEMBER = "socbridge"
API_PUBLIC_KEY = "simPublicKey0socbridge"
API_PRIVATE_KEY = "simPrivateKey0socbridge"
TECH_MEMBER = "jsmith"
TECH_PUBLIC_KEY = "simPublicKey0jsmith"
TECH_PRIVATE_KEY = "simPrivateKey0jsmith"

BOARD_ID = 41
STATUS_IDS = {
    "New": 410,
    "Send to SOC": 411,
    "In Progress": 412,
    "Solved": 413,
    "Unresolved": 414,
    "Unlinked": 415,
}
TENANT_COMPANIES = {"acme": 250, "globex": 251}


@dataclass
class Role:
    id: int
    name: str
    # (module, function) -> (add, edit, delete, inquire); absent = all None
    permissions: dict[tuple[str, str], tuple[str, str, str, str]]
    table_setup: set[str] = field(default_factory=set)
    admin: bool = False


@dataclass
class Member:
    id: int
    identifier: str
    first_name: str
    last_name: str
    role_id: int
    public_key: str
    private_key: str
    api_member: bool = False


def roles() -> dict[int, Role]:
    return {
        1: Role(1, "Admin", {}, set(GUIDE_TABLE_SETUP), admin=True),
        31: Role(31, "SOC Integration", dict(GUIDE_PERMISSIONS), set(GUIDE_TABLE_SETUP)),
    }


def members() -> dict[int, Member]:
    return {
        API_MEMBER_ID: Member(
            API_MEMBER_ID, API_MEMBER, "SOC", "Bridge", 31, API_PUBLIC_KEY, API_PRIVATE_KEY, True
        ),
        150: Member(150, TECH_MEMBER, "Jane", "Smith", 1, TECH_PUBLIC_KEY, TECH_PRIVATE_KEY),
    }


def companies() -> dict[int, dict[str, Any]]:
    rows = [
        (2, LOGIN_COMPANY, "Demo MSP LLC"),
        (250, "AcmeCorp", "ACME Corporation"),
        (251, "Globex", "Globex Inc"),
        (260, "Initech", "Initech LLC"),
    ]
    return {
        cid: {
            "id": cid,
            "identifier": ident,
            "name": name,
            "status": {"id": 1, "name": "Active"},
            "addressLine1": "1 Main Street",
            "city": "Springfield",
            "phoneNumber": "555-0100",
            "deletedFlag": False,
        }
        for cid, ident, name in rows
    }


def boards() -> dict[int, dict[str, Any]]:
    where = {"location": {"id": 2, "name": "Main"}, "department": {"id": 10, "name": "Services"}}
    return {
        BOARD_ID: {"id": BOARD_ID, "name": "SOC Incidents", "inactiveFlag": False, **where},
        1: {"id": 1, "name": "Help Desk", "inactiveFlag": False, **where},
    }


def statuses() -> dict[int, dict[str, Any]]:
    rows: list[tuple[int, int, str, bool, bool]] = [
        (sid, BOARD_ID, name, name == "New", name == "Solved") for name, sid in STATUS_IDS.items()
    ]
    rows += [(11, 1, "New", True, False), (12, 1, "Closed", False, True)]
    return {
        sid: {
            "id": sid,
            "name": name,
            "board": {"id": board},
            "sortOrder": i,
            "displayOnBoard": True,
            "inactive": False,
            "closedStatus": closed,
            "defaultFlag": default,
        }
        for i, (sid, board, name, default, closed) in enumerate(rows)
    }


def priorities() -> dict[int, dict[str, Any]]:
    names = [
        "Priority 1 - Emergency Response",
        "Priority 2 - Quick Response",
        "Priority 3 - Normal Response",
        "Priority 4 - Schedule Maintenance",
    ]
    return {
        i: {
            "id": i,
            "name": name,
            "color": ["Red", "Orange", "Yellow", "Green"][i - 1],
            "sortOrder": i,
            "defaultFlag": i == 3,
            "level": ["Critical", "High", "Medium", "Low"][i - 1],
        }
        for i, name in enumerate(names, start=1)
    }


def sources() -> dict[int, dict[str, Any]]:
    return {
        sid: {"id": sid, "name": name, "defaultFlag": sid == 2}
        for sid, name in ((2, "Email"), (3, "Phone"), (9, "SOC Platform"))
    }
