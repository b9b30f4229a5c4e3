"""``audit --remote``: read every linked ticket on both live APIs, in the SOC's vocabulary.

The clients are built the way the daemon builds them (keys and token read
from their files, never printed), so their pacing, retries and ``Retry-After``
handling apply. Values are normalised as sync normalises them (R6, R7) so they
compare with the projection's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from daemon.config import Config
from daemon.connectwise.client import ConnectWiseClient
from daemon.connectwise.errors import NotFoundError
from daemon.secrets import load_secret
from daemon.soc.client import SocClient
from daemon.soc.errors import SocNotFoundError
from daemon.sync.decide import cw_status, soc_status
from daemon.sync.rules import Rules
from projections.state import BridgeState

Remote = dict[str, dict[str, dict[str, str] | None]]


@asynccontextmanager
async def clients(config: Config) -> AsyncIterator[tuple[ConnectWiseClient, SocClient]]:
    async with aiohttp.ClientSession() as session:
        keys = config.connectwise.load_keys()
        cw = await ConnectWiseClient.connect(config.connectwise, keys, session)
        soc = SocClient.from_settings(
            config.soc, load_secret(config.soc.api_token), session=session
        )
        try:
            yield cw, soc
        finally:
            await cw.close()
            await soc.close()


def _name(value: Any) -> str | None:
    return value.get("name") if isinstance(value, dict) else value


async def fetch_remote(
    state: BridgeState, rules: Rules, cw: ConnectWiseClient, soc: SocClient
) -> Remote:
    """Each linked link's live status and priority on each side (None when gone)."""
    remote: Remote = {}
    for link_id, link in sorted(state.links.items()):
        if link["state"] != "linked":
            continue
        sides: dict[str, dict[str, str] | None] = {}
        try:
            t = await cw.get_ticket(link["cw_id"])
            sides["cw"] = {
                "status": cw_status(rules, _name(t.get("status"))),
                "priority": rules.soc_priority_for_cw(_name(t.get("priority"))),
            }
        except NotFoundError:
            sides["cw"] = None
        try:
            s = await soc.get_ticket(link["soc_id"])
            sides["soc"] = {
                "status": soc_status(s.get("status")),
                "priority": s.get("priority") or "normal",
            }
        except SocNotFoundError:
            sides["soc"] = None
        remote[link_id] = sides
    return remote
