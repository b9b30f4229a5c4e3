"""Run the SOC simulator on a real socket: for tests, the demo and the CLI.

``async with SocSimulator(port=0) as sim:`` serves the seeded desk on
loopback and exposes ``sim.url`` (e.g. ``http://127.0.0.1:41234``),
``sim.state``, ``sim.faults``, ``sim.webhooks`` and ``sim.dispatcher``.
"""

from __future__ import annotations

from aiohttp import web

from daemon.simulators.soc.app import make_app
from daemon.simulators.soc.faults import FaultInjector, FaultSettings
from daemon.simulators.soc.state import Clock, DeskState
from daemon.simulators.soc.webhooks import WebhookDispatcher, WebhookRegistry


class SocSimulator:
    """The seeded simulator bound to ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultSettings | None = None,
        export_lag: float = 60.0,
        clock: Clock | None = None,
        webhook_retry_delay: float = 0.05,
    ) -> None:
        self.host = host
        self.port = port
        self.state = DeskState.seeded(clock)
        self.faults = FaultInjector(faults)
        self.webhooks = WebhookRegistry(self.state.clock)
        self.dispatcher = WebhookDispatcher(
            self.webhooks, self.faults, self.state.clock, retry_delay=webhook_retry_delay
        )
        self.app = make_app(
            self.state, self.faults, self.webhooks, self.dispatcher, export_lag=export_lag
        )
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SocSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
