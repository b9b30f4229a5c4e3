"""Run the ConnectWise simulator on a socket: used by the CLI, the demo and tests.

``async with SimServer(...) as sim:`` listens (port 0 picks a free port), tells
the app its public URL (for ``key_url`` and ``FromUrl``) and exposes the state,
faults and callback dispatcher for in-process use.
"""

from __future__ import annotations

import ssl
from types import TracebackType

from aiohttp import web

from daemon.simulators.connectwise.app import (
    DISPATCHER_KEY,
    FAULTS_KEY,
    STATE_KEY,
    build_app,
    set_public_url,
)
from daemon.simulators.connectwise.callbacks import CallbackDispatcher
from daemon.simulators.connectwise.faults import Faults
from daemon.simulators.connectwise.state import SimState


class SimServer:
    """A listening ConnectWise simulator."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        state: SimState | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.app = build_app(state, faults)
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        return self.app[STATE_KEY]

    @property
    def faults(self) -> Faults:
        return self.app[FAULTS_KEY]

    @property
    def callbacks(self) -> CallbackDispatcher:
        return self.app[DISPATCHER_KEY]

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> SimServer:
        self._runner = web.AppRunner(self.app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        set_public_url(self.app, self.url)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
