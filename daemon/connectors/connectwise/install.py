"""``socbridge callbacks install|remove|status``: the ticket callback registration (R11, R16).

socbridge registers one ``ticket`` callback at ``board`` level on the
integration board (the levels of ../shared/reference/connectwise/NOTES.md §4)
pointing at ``public_callback_url``. Installation is idempotent: an identical
entry is left alone, entries with socbridge's URL but another board or level
(the board was changed) are replaced, and a concurrent duplicate
(``ObjectExists``, NOTES §5) counts as installed. Removal deletes every entry
with socbridge's URL, and succeeds when there is none. ``isSelfSuppressedFlag``
stays false on purpose: socbridge's own writes must come back so the log shows
them (sync recognises them as echoes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.errors import ConnectWiseConfigError, ObjectExistsError
from daemon.connectors.connectwise.settings import ConnectWiseSettings

DESCRIPTION = "socbridge ticket sync"


@dataclass
class CallbackState:
    """What the callback registration looks like (or became)."""

    action: str  # installed, unchanged, replaced, removed, absent, present, stale
    entries: list[dict[str, Any]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def describe(self) -> str:
        ids = ", ".join(str(e["id"]) for e in self.entries) or "none"
        text = f"ticket callback {self.action} (entries: {ids})"
        if self.removed:
            text += f"; deleted stale entries {', '.join(map(str, self.removed))}"
        return text


def public_url(settings: ConnectWiseSettings) -> str:
    if not settings.public_callback_url:
        raise ConnectWiseConfigError(
            "connectwise.public_callback_url is not set: set it to the https URL at which "
            "ConnectWise reaches this daemon's POST /callbacks/connectwise"
        )
    return settings.public_callback_url


async def board_id(client: ConnectWiseClient, settings: ConnectWiseSettings) -> int:
    for board in await client.boards():
        if str(board.get("name", "")).casefold() == settings.board.casefold():
            return int(board["id"])
    raise ConnectWiseConfigError(
        f"service board {settings.board!r} does not exist in ConnectWise; create it "
        "(System > Setup Tables > Service Board) or fix connectwise.board"
    )


def desired_entry(url: str, board: int) -> dict[str, Any]:
    return {
        "url": url,
        "objectId": board,
        "type": "ticket",
        "level": "board",
        "description": DESCRIPTION,
        "inactiveFlag": False,
        "isSelfSuppressedFlag": False,
    }


def _matches(entry: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return (
        str(entry.get("type", "")).lower() == "ticket"
        and str(entry.get("level", "")).lower() == wanted["level"]
        and entry.get("objectId") == wanted["objectId"]
        and not entry.get("inactiveFlag")
    )


async def ours(client: ConnectWiseClient, url: str) -> list[dict[str, Any]]:
    """Every callback entry pointing at socbridge's URL."""
    return [e for e in await client.callbacks() if e.get("url") == url]


async def install(client: ConnectWiseClient, settings: ConnectWiseSettings) -> CallbackState:
    url = public_url(settings)
    wanted = desired_entry(url, await board_id(client, settings))
    existing = await ours(client, url)
    keep = [e for e in existing if _matches(e, wanted)]
    stale = [e for e in existing if not _matches(e, wanted)]
    removed = []
    for entry in stale + keep[1:]:
        await client.delete_callback(int(entry["id"]))
        removed.append(int(entry["id"]))
    if keep:
        return CallbackState("unchanged" if not removed else "replaced", keep[:1], removed)
    try:
        created = await client.create_callback(wanted)
    except ObjectExistsError:
        # Another installer won the race: what we wanted exists.
        return CallbackState("unchanged", await ours(client, url), removed)
    return CallbackState("installed" if not removed else "replaced", [created], removed)


async def remove(client: ConnectWiseClient, settings: ConnectWiseSettings) -> CallbackState:
    url = public_url(settings)
    removed = []
    for entry in await ours(client, url):
        await client.delete_callback(int(entry["id"]))
        removed.append(int(entry["id"]))
    return CallbackState("removed" if removed else "absent", [], removed)


async def status(client: ConnectWiseClient, settings: ConnectWiseSettings) -> CallbackState:
    url = public_url(settings)
    wanted = desired_entry(url, await board_id(client, settings))
    existing = await ours(client, url)
    if any(_matches(e, wanted) for e in existing):
        return CallbackState("present", existing)
    return CallbackState("stale" if existing else "absent", existing)
