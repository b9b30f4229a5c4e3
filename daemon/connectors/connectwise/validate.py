"""``socbridge validate``: the guide's "Validate Connections", as a checklist (R10).

Each line passes or fails with the fix: the URL and codebase, the key pair and
clientId, the API member and its security role, every permission of the
guide's table at the level the guide asks for (each missing one named, with
where to grant it), the Table Setup allow list, the board, the routing /
unlinked / solved / unresolved statuses on it, the priorities of the mapping
and the source. R4 is enforced when the configuration is loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from daemon.connectors.connectwise.client import ConnectWiseClient, discover_codebase
from daemon.connectors.connectwise.errors import ConnectWiseError, PermissionDeniedError
from daemon.connectors.connectwise.permissions import (
    GUIDE_PERMISSIONS,
    GUIDE_TABLE_SETUP,
    LEVEL_NAMES,
)
from daemon.connectors.connectwise.settings import ApiKeys, ConnectWiseSettings
from daemon.connectors.contract import RemoteError


@dataclass(frozen=True)
class Check:
    """One checklist line."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""

    def render(self) -> str:
        line = f"{'PASS' if self.ok else 'FAIL'}  {self.name}"
        if self.detail:
            line += f": {self.detail}"
        if not self.ok and self.fix:
            line += f"\n      fix: {self.fix}"
        return line


def _names(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r.get("name", "")).casefold(): r for r in rows}


def permission_checks(role: str, settings_rows: list[dict[str, Any]]) -> list[Check]:
    """One line per permission of the guide's table, against the role's settings."""
    have = {
        (str(r.get("moduleName", "")), str(r.get("moduleFunctionName", ""))): r
        for r in settings_rows
    }
    checks = []
    for (module, function), required in GUIDE_PERMISSIONS.items():
        row = have.get((module, function), {})
        actual = [row.get(f"{n.lower()}Level", "None") for n in LEVEL_NAMES]
        missing = [
            f"{name} {got} (needs All)"
            for name, need, got in zip(LEVEL_NAMES, required, actual, strict=True)
            if need == "All" and got != "All"
        ]
        checks.append(
            Check(
                f"permission {module} / {function}",
                not missing,
                ", ".join(missing) if missing else "as the guide asks",
                f"System > Security Roles > {role} > {module} > {function}: set "
                + ", ".join(
                    f"{n} level All"
                    for n, r in zip(LEVEL_NAMES, required, strict=True)
                    if r == "All"
                ),
            )
        )
    return checks


async def run_checks(
    settings: ConnectWiseSettings, keys: ApiKeys, session: aiohttp.ClientSession
) -> list[Check]:
    """Every check, in order; stops early only when the API cannot be reached."""
    checks: list[Check] = []
    try:
        codebase = settings.codebase or await discover_codebase(
            session, settings.site_url, settings.company_id, timeout_s=settings.timeout_seconds
        )
    except ConnectWiseError as exc:
        return [Check("ConnectWise URL and company identifier", False, str(exc),
                      "set connectwise.site_url and connectwise.company_id as on the "
                      "ConnectWise sign-in page")]  # fmt: skip
    checks.append(Check("ConnectWise URL and company identifier", True, f"codebase {codebase}"))
    client = await ConnectWiseClient.connect(
        settings.model_copy(update={"codebase": codebase}), keys, session
    )
    try:
        info = await client.company_info_system()
    except (ConnectWiseError, RemoteError) as exc:
        checks.append(Check("API keys and clientId", False, str(exc),
                            "generate a key pair on the API member's API Keys tab and check "
                            "connectwise.public_key, private_key and client_id"))  # fmt: skip
        return checks
    checks.append(Check("API keys and clientId", True, f"ConnectWise {info.get('version')}"))

    async def attempt(
        name: str, fix: str, fn: Callable[[], Awaitable[Check | list[Check]]]
    ) -> None:
        try:
            result = await fn()
            checks.extend(result if isinstance(result, list) else [result])
        except (ConnectWiseError, RemoteError) as exc:
            checks.append(Check(name, False, str(exc), fix))

    role: dict[str, Any] = {}

    async def member() -> Check:
        found = await client.members(f"identifier = '{settings.api_member.replace(chr(39), '')}'")
        if not found:
            return Check("API member", False, f"no member {settings.api_member!r}",
                         "set connectwise.api_member to the API member's identifier")  # fmt: skip
        role.update(found[0].get("securityRole") or {})
        return Check("API member", True, f"{settings.api_member}, role {role.get('name')}")

    await attempt("API member", "allow the API member to read members", member)
    if role.get("id"):
        try:
            rows = await client.security_role_settings(int(role["id"]))
            checks.extend(permission_checks(str(role.get("name")), rows))
        except (ConnectWiseError, RemoteError) as exc:
            checks.append(Check("security role permissions", False, str(exc),
                                "allow the API member to read its security role"))  # fmt: skip
    for entry, path in GUIDE_TABLE_SETUP.items():

        async def probe(entry: str = entry, path: str = path) -> Check:
            try:
                await client.get(path, {"pageSize": 1})
            except PermissionDeniedError:
                return Check(f"Table Setup access {entry}", False, "disallowed",
                             f"System > Security Roles > {role.get('name', 'the role')} > System > "
                             f"Table Setup > Customize: move {entry} to Allow Access")  # fmt: skip
            return Check(f"Table Setup access {entry}", True)

        await attempt(f"Table Setup access {entry}", "", probe)

    async def board_and_statuses() -> list[Check]:
        boards = _names(await client.boards())
        board = boards.get(settings.board.casefold())
        if board is None:
            return [Check(f"service board {settings.board!r}", False, "does not exist",
                          "create it (System > Setup Tables > Service Board) or fix "
                          "connectwise.board")]  # fmt: skip
        lines = [Check(f"service board {settings.board!r}", True, f"id {board['id']}")]
        statuses = _names(await client.board_statuses(int(board["id"])))
        for key in ("routing_status", "unlinked_status", "solved_status", "unresolved_status"):
            name = getattr(settings, key)
            if name is None:
                continue
            ok = name.casefold() in statuses
            lines.append(
                Check(
                    f"{key.replace('_', ' ')} {name!r}",
                    ok,
                    "on the board" if ok else f"not a status of {settings.board!r}",
                    f"add it on the board's Statuses tab or fix connectwise.{key}",
                )
            )
        return lines

    await attempt(f"service board {settings.board!r}", "", board_and_statuses)

    async def priorities() -> Check:
        have = _names(await client.priorities())
        missing = [f"{soc}->{cw!r}" for soc, cw in settings.priority_mapping.items()
                   if cw.casefold() not in have]  # fmt: skip
        return Check("priority mapping", not missing,
                     f"missing {', '.join(missing)}" if missing else "all four exist",
                     "fix connectwise.priority_mapping to existing priorities")  # fmt: skip

    await attempt("priority mapping", "", priorities)
    if settings.source is not None:
        source = settings.source

        async def sources() -> Check:
            ok = source.casefold() in _names(await client.sources())
            return Check(f"source {source!r}", ok, "exists" if ok else "does not exist",
                         "create it or fix connectwise.source")  # fmt: skip

        await attempt(f"source {source!r}", "", sources)
    return checks
