"""A whole bridge on loopback: both simulators, the daemon, and the people on each side.

Used by ``socbridge demo`` and by the scenario tests. The technician acts on
ConnectWise and the analyst on the SOC desk through the simulators' real HTTP
APIs, as people would; the daemon runs in this process (its app on a real
port), so a test can wait for the log to reach a state instead of sleeping:
:meth:`Bridge.until` re-checks its condition whenever an event is appended.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from daemon.connectors.remote import basic_auth
from daemon.outbox.worker import Outbox
from daemon.service.app import ENGINE, OUTBOX, STORE, build_app
from daemon.service.config import Config, load_config
from daemon.service.listener import start_sites
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.rehearsal import Rehearsal, start_rehearsal
from daemon.simulators.soc import fixture as socfx
from daemon.sync.engine import SyncEngine
from eventstore import EventStore, RecordedEvent

Json = dict[str, Any]


class Technician:
    """An MSP technician working tickets in ConnectWise (through its REST API)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.base = f"{url}/{cwfx.CODEBASE}apis/3.0"
        self.headers = {
            "clientId": cwfx.CLIENT_ID,
            **basic_auth(f"{cwfx.LOGIN_COMPANY}+{cwfx.TECH_PUBLIC_KEY}", cwfx.TECH_PRIVATE_KEY),
        }

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, f"{self.base}/{path}", json=body, headers=self.headers
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"ConnectWise {method} {path}: {resp.status} {data}")
            return data

    async def _object(self, method: str, path: str, body: Any = None) -> Json:
        return dict(await self._call(method, path, body))

    async def create_ticket(
        self, summary: str, *, company: int = 250, status: str = "Send to SOC",
        priority: str = "Priority 3 - Normal Response", board: str = "SOC Incidents",
    ) -> Json:  # fmt: skip
        return await self._object(
            "POST",
            "service/tickets",
            {
                "summary": summary,
                "company": {"id": company},
                "board": {"name": board},
                "status": {"name": status},
                "priority": {"name": priority},
            },
        )

    async def ticket(self, ticket_id: int) -> Json:
        return await self._object("GET", f"service/tickets/{ticket_id}")

    async def tickets(self, conditions: str) -> list[Json]:
        async with self.session.get(
            f"{self.base}/service/tickets",
            params={"conditions": conditions, "pageSize": "1000"},
            headers=self.headers,
        ) as resp:
            return list(await resp.json())

    async def set(self, ticket_id: int, **fields: str) -> Json:
        ops = [
            {"op": "replace", "path": name, "value": {"name": value}}
            for name, value in fields.items()
        ]
        return await self._object("PATCH", f"service/tickets/{ticket_id}", ops)

    async def note(self, ticket_id: int, text: str, section: str = "Discussion") -> Json:
        flags = {
            "Discussion": "detailDescriptionFlag",
            "Internal Analysis": "internalAnalysisFlag",
            "Resolution": "resolutionFlag",
        }
        body = {"text": text, **{flag: name == section for name, flag in flags.items()}}
        return await self._object("POST", f"service/tickets/{ticket_id}/notes", body)

    async def notes(self, ticket_id: int) -> list[Json]:
        async with self.session.get(
            f"{self.base}/service/tickets/{ticket_id}/notes", headers=self.headers
        ) as resp:
            return list(await resp.json())


class Analyst:
    """A SOC analyst working incidents on the SOC desk (through its REST API)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.base = f"{url}/api/v2"
        self.headers = basic_auth(f"{socfx.ANALYST_EMAIL}/token", socfx.ANALYST_TOKEN)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, f"{self.base}/{path}", json=body, headers=self.headers
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"SOC {method} {path}: {resp.status} {data}")
            return data

    async def create_ticket(
        self, subject: str, body: str, *, organization: int = 9001, priority: str = "high"
    ) -> Json:
        doc = await self._call(
            "POST",
            "tickets.json",
            {
                "ticket": {
                    "subject": subject,
                    "comment": {"body": body, "public": True},
                    "organization_id": organization,
                    "priority": priority,
                }
            },
        )
        return dict(doc["ticket"])

    async def ticket(self, ticket_id: int) -> Json:
        return dict((await self._call("GET", f"tickets/{ticket_id}.json"))["ticket"])

    async def tickets(self) -> list[Json]:
        return list((await self._call("GET", "tickets.json"))["tickets"])

    async def set(self, ticket_id: int, **fields: str) -> Json:
        doc = await self._call("PUT", f"tickets/{ticket_id}.json", {"ticket": fields})
        return dict(doc["ticket"])

    async def comment(self, ticket_id: int, body: str, public: bool = True) -> Json:
        return dict(
            await self._call(
                "PUT",
                f"tickets/{ticket_id}.json",
                {"ticket": {"comment": {"body": body, "public": public}}},
            )
        )

    async def comments(self, ticket_id: int) -> list[Json]:
        return list((await self._call("GET", f"tickets/{ticket_id}/comments.json"))["comments"])


class Bridge:
    """Simulators + daemon in a temp folder; ``async with Bridge() as b: ...``."""

    def __init__(
        self,
        folder: Path | None = None,
        *,
        poll_s: float = 0.5,
        export_lag: float = 60.0,
        console_port: int | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.folder = folder
        self.poll_s = poll_s
        self.export_lag = export_lag
        self.console_port = console_port
        self.rehearsal: Rehearsal | None = None
        self.config: Config | None = None
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self.session: aiohttp.ClientSession | None = None
        self._appended = asyncio.Event()

    async def __aenter__(self) -> Bridge:
        if self.folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="socbridge-")
            self.folder = Path(self._tmp.name)
        self.rehearsal = await start_rehearsal(
            "127.0.0.1", 0, self.folder / "socbridge.toml", self.folder / "sheet.json",
            poll_s=self.poll_s, export_lag=self.export_lag, console_port=self.console_port,
        )  # fmt: skip
        self.config = load_config(self.rehearsal.config_path)
        self.session = aiohttp.ClientSession()
        self.technician = Technician(self.session, self.rehearsal.cw.url)
        self.analyst = Analyst(self.session, self.rehearsal.soc.url)
        await self.start_daemon()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_daemon()
        if self.session is not None:
            await self.session.close()
        if self.rehearsal is not None:
            await self.rehearsal.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def start_daemon(self, config: Config | None = None) -> None:
        """Start the daemon (again) on the config's port and wait until it is ready."""
        assert self.config is not None
        self.config = config or self.config
        self._app = build_app(self.config)
        self._runner = web.AppRunner(self._app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await start_sites(self._runner, self.config.server)
        self.engine.on_event(lambda _e: self._appended.set())
        await asyncio.wait_for(self.engine.ready.wait(), 30)

    async def stop_daemon(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def console_url(self) -> str | None:
        """Where the operator console listens (``None`` without an ``[admin]`` section)."""
        admin = self.config.admin if self.config is not None else None
        return f"http://127.0.0.1:{admin.port}/" if admin is not None else None

    @property
    def app(self) -> web.Application:
        assert self._app is not None
        return self._app

    @property
    def engine(self) -> SyncEngine:
        assert self._app is not None
        return self._app[ENGINE]

    @property
    def outbox(self) -> Outbox:
        assert self._app is not None
        return self._app[OUTBOX]

    @property
    def store(self) -> EventStore:
        assert self._app is not None
        return self._app[STORE]

    async def until(
        self, check: Callable[[], Awaitable[Any]], what: str, deadline_s: float = 20.0
    ) -> Any:
        """Re-check ``check`` at every folded event (and every poll period) until truthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while True:
            self._appended.clear()
            result = await check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"gave up waiting for: {what}")
            try:
                await asyncio.wait_for(self._appended.wait(), min(remaining, self.poll_s))
            except TimeoutError:
                pass

    async def settled(self, deadline_s: float = 20.0) -> None:
        """Wait until the log is folded to its end, nothing is pending and the outbox is idle."""

        async def idle() -> bool:
            last = await self.store.last_position()
            return (
                self.engine.state.position >= last
                and self.engine.quiescent
                and not self.engine.state.outbox
            )

        await self.until(idle, "the bridge to settle", deadline_s)

    async def events(self, link_id: str) -> list[RecordedEvent]:
        """Every event of a link (its decisions, commands and outcomes), in order."""
        return [e async for e in self.store.read() if e.ticket == link_id]
