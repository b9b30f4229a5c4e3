"""The SOC simulator's seed data: the shared demo fixture, SOC side.

Both simulators and the demo agree on these (the ConnectWise side is in
``daemon/simulators/connectwise/fixture.py``):

| what | SOC (Zendesk-shaped desk) | ConnectWise |
| --- | --- | --- |
| account | subdomain ``soc``, account id 12514403 | — |
| tenant ``acme`` | org 9001 "ACME Corporation", external id ``acme`` | company 250 |
| tenant ``globex`` | org 9002 "Globex Inc", external id ``globex`` | company 251 |
| not a tenant | organization 9003 "Initech LLC" | company 260 ``Initech`` |
| API agent (admin) | user 7001 ``socbridge@soc.example``, token below | — |
| SOC analyst (agent) | user 7002 ``analyst@soc.example``, token below | — |
| end user (no API rights) | user 7003 ``requester@acme.example``, token below, org 9001 | — |

Ticket ids start at 35436 (the OAS examples' ticket id); comment ids start at
206091192546 (the OAS audit example's first event id). The tokens are demo
values for the simulator only; they open nothing real.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBDOMAIN = "soc"
ACCOUNT_ID = 12514403
FIRST_TICKET_ID = 35436
FIRST_COMMENT_ID = 206091192546

API_EMAIL = "socbridge@soc.example"
API_TOKEN = "simToken0socbridge0api"  # noqa: S105 - simulator demo token
ANALYST_EMAIL = "analyst@soc.example"
ANALYST_TOKEN = "simToken0analyst"  # noqa: S105 - simulator demo token
END_USER_EMAIL = "requester@acme.example"
END_USER_TOKEN = "simToken0enduser"  # noqa: S105 - simulator demo token

API_USER_ID = 7001
ANALYST_USER_ID = 7002
END_USER_ID = 7003

TENANT_ORGANIZATIONS = {"acme": 9001, "globex": 9002}


@dataclass(frozen=True)
class SeedOrganization:
    id: int
    name: str
    external_id: str | None


@dataclass(frozen=True)
class SeedUser:
    id: int
    name: str
    email: str
    role: str  # "admin" | "agent" | "end-user"
    token: str
    organization_id: int | None


ORGANIZATIONS = (
    SeedOrganization(9001, "ACME Corporation", "acme"),
    SeedOrganization(9002, "Globex Inc", "globex"),
    SeedOrganization(9003, "Initech LLC", None),
)

USERS = (
    SeedUser(API_USER_ID, "socbridge API", API_EMAIL, "admin", API_TOKEN, None),
    SeedUser(ANALYST_USER_ID, "SOC Analyst", ANALYST_EMAIL, "agent", ANALYST_TOKEN, None),
    SeedUser(END_USER_ID, "ACME Requester", END_USER_EMAIL, "end-user", END_USER_TOKEN, 9001),
)
