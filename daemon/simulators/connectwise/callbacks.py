"""Callback delivery of the ConnectWise simulator, signed as the real one is.

Each ticket write is matched against the registered ``ticket`` callback entries
(level ``owner`` = every ticket, ``board`` / ``status`` / ``ticket`` =
``objectId`` equal to the ticket's board / status / id), and each match is
POSTed as the envelope of ../shared/reference/connectwise/NOTES.md §4:
``MessageId``, ``FromUrl``, ``CompanyId``, ``MemberId`` (the writer),
``Action``, ``Type``, ``ID``, ``CallbackObjectRecId``, ``Entity`` (the ticket
as a JSON *string*, ``null`` on delete), ``Metadata.key_url``. The
``x-content-signature`` header is ``base64(HMAC-SHA256(SHA256(signing_key),
raw_body))``. Inferred, not documented: ``skipCallback`` on a write and
``isSelfSuppressedFlag`` on an entry suppress the callback; failed deliveries
are retried a few times.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog

from daemon.simulators.connectwise import fixture
from daemon.simulators.connectwise.faults import Faults
from daemon.simulators.connectwise.state import Json, SimState
from daemon.simulators.trust import client_session


def sign(signing_key: str, body: bytes) -> str:
    """The ``x-content-signature`` value for ``body``."""
    key = hashlib.sha256(signing_key.encode("utf-8")).digest()
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode("ascii")


@dataclass
class Delivery:
    """One attempt to deliver a callback, for the admin log and tests."""

    message_id: str
    action: str
    ticket_id: int
    url: str
    status: int | None
    error: str | None = None


@dataclass
class _Outgoing:
    url: str
    body: bytes
    message_id: str
    action: str
    ticket_id: int


@dataclass
class CallbackDispatcher:
    """Turns state changes into signed callback POSTs, with faults applied."""

    state: SimState
    faults: Faults
    base_url: str = ""  # set once the simulator listens (scheme://host:port)
    attempts: int = 3
    retry_delay: float = 0.2
    deliveries: list[Delivery] = field(default_factory=list)
    _queue: asyncio.Queue[_Outgoing | None] = field(default_factory=asyncio.Queue)
    _held: list[_Outgoing] = field(default_factory=list)
    _boards: dict[int, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.state.listeners.append(self.on_change)
        self._log = structlog.get_logger("socbridge.sim.connectwise")

    @property
    def key_url(self) -> str:
        # The double slash after the codebase is what real callbacks carry.
        return (
            f"{self.base_url}/{fixture.CODEBASE}/system/callbackkey/index.rails"
            f"?companyName={fixture.LOGIN_COMPANY}&id={self.state.callback_key_id}"
        )

    async def start(self) -> None:
        self._session = client_session()  # trusts a rehearsal CA (sim all --tls)
        self._task = asyncio.create_task(self._run(), name="cw-sim-callbacks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def drain(self) -> None:
        """Wait until every queued callback was delivered (or given up)."""
        await self._queue.join()

    def release_held(self) -> None:
        """Send the callbacks held back for reordering now."""
        for item in self._held:
            self._queue.put_nowait(item)
        self._held.clear()

    def on_change(
        self, action: str, ticket_id: int, entity: Json | None, writer: str, skip: bool
    ) -> None:
        if entity is not None:
            self._boards[ticket_id] = entity["board"]["id"]
        if skip:
            return
        board_id = self._boards.get(ticket_id)
        status_id = entity["status"]["id"] if entity else None
        writer_member = self.state.member_by_identifier(writer)
        for entry in list(self.state.callbacks.values()):
            if entry["type"] != "ticket" or entry["inactiveFlag"]:
                continue
            wanted = {"board": board_id, "status": status_id, "ticket": ticket_id}
            if entry["level"] != "owner" and wanted.get(entry["level"]) != entry["objectId"]:
                continue
            if (
                entry["isSelfSuppressedFlag"]
                and writer_member
                and writer_member.id == entry["memberId"]
            ):
                continue
            self._enqueue(entry, action, ticket_id, entity, writer)

    def _enqueue(
        self, entry: Json, action: str, ticket_id: int, entity: Json | None, writer: str
    ) -> None:
        host = self.base_url.split("://", 1)[-1]
        payload: dict[str, Any] = {
            "Action": action,
            "CallbackObjectRecId": entry["id"],
            "CompanyId": fixture.LOGIN_COMPANY,
            "Entity": orjson.dumps(entity).decode() if entity is not None else None,
            "FromUrl": host,
            "ID": ticket_id,
            "MemberId": writer,
            "MessageId": str(uuid.uuid4()),
            "Metadata": {"key_url": self.key_url},
            "PartnerId": "61ddc2817bcddc0001c74208",
            "ProductInstanceId": "639c96cab2eb560001dd1324",
            "Type": "ticket",
        }
        out = _Outgoing(
            entry["url"], orjson.dumps(payload), payload["MessageId"], action, ticket_id
        )
        decision = self.faults.callback_action()
        if decision == "drop":
            self.deliveries.append(
                Delivery(out.message_id, action, ticket_id, out.url, None, "dropped")
            )
            return
        if decision == "hold":
            self._held.append(out)
            return
        self._queue.put_nowait(out)
        if decision == "duplicate":
            self._queue.put_nowait(out)
        # A held callback goes out after the next one: that is the reordering.
        self.release_held()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is not None:
                    await self._deliver(item)
            except Exception as exc:
                self._log.warning("sim.callback.error", error=type(exc).__name__)
            finally:
                self._queue.task_done()

    async def _deliver(self, out: _Outgoing) -> None:
        assert self._session is not None
        if self.faults.callback_delay:
            await asyncio.sleep(self.faults.callback_delay)
        headers = {
            "Content-Type": "application/json",
            "x-content-signature": sign(self.state.signing_key, out.body),
        }
        for attempt in range(1, self.attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                async with self._session.post(
                    out.url, data=out.body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
            self.deliveries.append(
                Delivery(out.message_id, out.action, out.ticket_id, out.url, status, error)
            )
            if status is not None and status < 500:
                return  # 2xx delivered; 4xx is a refusal, retrying will not help
            if attempt < self.attempts:
                await asyncio.sleep(self.retry_delay * attempt)
