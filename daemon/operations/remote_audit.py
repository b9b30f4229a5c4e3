"""``audit --remote``: read every linked ticket on both live APIs, in the SOC's vocabulary.

It also lists the tickets that carry socbridge's marker (ConnectWise
``externalXRef``, SOC ``external_id``) but have no link in the log.

The clients are built the way the daemon builds them (keys and token read
from their files, never printed), so their pacing, retries and ``Retry-After``
handling apply. Values are normalised as sync normalises them (R6, R7) so they
compare with the projection's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.contract import RemoteNotFoundError
from daemon.connectors.soc.client import SocClient
from daemon.service.config import Config
from daemon.service.secrets import load_secret
from daemon.sync.rules import Rules
from daemon.sync.vocabulary import CW_MARKER, SOC_MARKER, cw_status, soc_status
from projections.audit import Orphan
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
        if link.state != "linked" or link.cw_id is None or link.soc_id is None:
            continue
        sides: dict[str, dict[str, str] | None] = {}
        try:
            t = await cw.get_ticket(link.cw_id)
            sides["cw"] = {
                "status": cw_status(rules, _name(t.get("status"))),
                "priority": rules.soc_priority_for_cw(_name(t.get("priority"))),
            }
        except RemoteNotFoundError:
            sides["cw"] = None
        try:
            s = await soc.get_ticket(link.soc_id)
            sides["soc"] = {
                "status": soc_status(s.get("status")),
                "priority": s.get("priority") or "normal",
            }
        except RemoteNotFoundError:
            sides["soc"] = None
        remote[link_id] = sides
    return remote


def _cw_values(rules: Rules, t: Mapping[str, Any]) -> dict[str, str]:
    return {
        "status": cw_status(rules, _name(t.get("status"))),
        "priority": rules.soc_priority_for_cw(_name(t.get("priority"))),
    }


def _soc_values(s: Mapping[str, Any]) -> dict[str, str]:
    return {"status": soc_status(s.get("status")), "priority": s.get("priority") or "normal"}


def _known(state: BridgeState, cw_id: int, soc_id: int) -> bool:
    return str(cw_id) in state.by_cw or str(soc_id) in state.by_soc or str(cw_id) in state.unlinked


async def fetch_orphans(
    state: BridgeState, rules: Rules, cw: ConnectWiseClient, soc: SocClient
) -> list[Orphan]:
    """Ticket pairs joined by socbridge's marker that the log holds no link for.

    A ConnectWise ticket whose ``externalXRef`` names a SOC ticket (one socbridge
    created for it) and a SOC ticket whose ``external_id`` names a ConnectWise
    ticket, when both tickets exist and neither is linked (or was ever unlinked:
    R3) in the log, as after restoring an older log.
    """
    found: dict[tuple[int, int], Orphan] = {}
    async for t in cw.iter_tickets(conditions=f"externalXRef like '{CW_MARKER}%'"):
        ref = str(t.get("externalXRef") or "")[len(CW_MARKER) :]
        if not ref.isdigit() or _known(state, int(t["id"]), int(ref)):
            continue
        try:
            s = await soc.get_ticket(int(ref))
        except RemoteNotFoundError:
            continue
        tenant = rules.tenant_for_org(s.get("organization_id"))
        if tenant is not None:
            found[(int(t["id"]), int(ref))] = Orphan(
                "soc", int(t["id"]), int(ref), tenant.name, _cw_values(rules, t), _soc_values(s)
            )
    # Every ticket on the desk, cursor-paged (the incremental export lags behind).
    for s in await soc._collect("tickets.json", "tickets"):
        marker = str(s.get("external_id") or "")
        ext = marker[len(SOC_MARKER) :]
        if not marker.startswith(SOC_MARKER) or not ext.isdigit():
            continue
        if _known(state, int(ext), int(s["id"])) or (int(ext), int(s["id"])) in found:
            continue
        try:
            t = await cw.get_ticket(int(ext))
        except RemoteNotFoundError:
            continue
        tenant = rules.tenant_for_org(s.get("organization_id"))
        if tenant is not None:
            found[(int(ext), int(s["id"]))] = Orphan(
                "cw", int(ext), int(s["id"]), tenant.name, _cw_values(rules, t), _soc_values(s)
            )
    return [found[k] for k in sorted(found)]
