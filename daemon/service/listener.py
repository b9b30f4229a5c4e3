"""Where and how the daemon listens: the TLS policy (R13) and the admin listener.

:func:`start_sites` opens the main listener on ``server.host:server.port``
with the R13 TLS context (:mod:`daemon.service.tls`), or plain HTTP when
``allow_plain_http`` is set and the host is loopback (config validation
refuses any other plain listener), and, if ``server.admin_port`` is set, a
plain loopback listener for ``/healthz``, ``/readyz`` and ``/metrics``. Either
way the admin routes answer only ``server.admin_sources`` (loopback by
default; see :mod:`daemon.service.guard`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from typing import Any

import structlog
from aiohttp import web

from daemon.service.config import AdminSettings, ConfigError, ServerSettings
from daemon.service.tls import TlsPolicyError, server_context


def listener_ssl(server: ServerSettings) -> ssl.SSLContext | None:
    """The main listener's TLS context, or ``None`` for allowed loopback plain HTTP."""
    try:
        server.require_listener_policy()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if server.tls_cert is None or server.tls_key is None:
        return None
    try:
        return server_context(server.tls_cert, server.tls_key)
    except TlsPolicyError as exc:
        raise ConfigError(str(exc)) from None


class PortTakenError(ConfigError):
    """A listener's address is in use by another process: a restart cannot fix that."""


Listener = tuple[socket.socket, ssl.SSLContext | None]


def bind_listeners(server: ServerSettings) -> list[Listener]:
    """Bind the main (and optional admin) listening sockets, before anything else starts:
    a port taken by another process is refused (:class:`PortTakenError`) before the log is
    opened or anything appended."""
    wanted = [(server.host, server.port, listener_ssl(server))]
    if server.admin_port is not None:
        wanted.append((server.admin_host, server.admin_port, None))
    bound: list[Listener] = []
    try:
        for host, port, context in wanted:
            bound.append((_bind(host, port), context))
    except BaseException:
        for sock, _ in bound:
            sock.close()
        raise
    return bound


def bind_console(admin: AdminSettings) -> socket.socket:
    """Bind the console's listening socket (``[admin] listen``), before anything starts."""
    return _bind(admin.host, admin.port, "[admin] listen")


def _bind(host: str, port: int, setting: str = "[server] port (and host)") -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTakenError(
                f"port {port} on {host} is taken by another process; stop it, or set "
                f"{setting} to a free one"
            ) from None
        raise
    return sock


async def start_bound(
    runner: web.AppRunner, listeners: list[Listener], max_connections: int | None = None
) -> list[CappedSite]:
    """Serve ``runner`` on sockets :func:`bind_listeners` bound; the first (the public
    listener) keeps at most ``max_connections`` open."""
    sites = [
        CappedSite(runner, sock, ssl_context=context, limit=max_connections if n == 0 else None)
        for n, (sock, context) in enumerate(listeners)
    ]
    for site in sites:
        await site.start()
    return sites


async def start_sites(runner: web.AppRunner, server: ServerSettings) -> list[CappedSite]:
    """Bind and start the main (and optional admin) listeners on a set-up runner."""
    return await start_bound(runner, bind_listeners(server), server.max_connections)


#: What a connection past the cap gets before it is closed: a complete, valid response, so
#: a desk retries later instead of reporting a broken connection.
_BUSY = b"too many open connections; retry later\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


class ConnectionCap:
    """The listener's protocol factory, refusing connections past ``limit`` open ones.

    Counted at accept time: aiohttp's own list of open connections (those past their
    TLS handshake), plus the ones accepted in the same burst, which join that list only
    once the loop runs again. Refusals are logged at most once a second, with how many.
    """

    def __init__(self, server: web.Server, limit: int, interval_s: float = 1.0) -> None:
        self.server = server
        self.limit = limit
        self.refused = 0  # since the last line
        self.interval_s = interval_s
        self._last = -interval_s
        self._burst = 0  # connections accepted since the loop last ran its callbacks
        self._log = structlog.get_logger("socbridge")

    def _burst_over(self) -> None:
        self._burst = 0

    def __call__(self) -> asyncio.BaseProtocol:
        # asyncio accepts a burst of waiting connections in one go, and each registers with
        # aiohttp only once its connection_made runs, after the burst: count the burst too.
        if not self._burst:
            asyncio.get_running_loop().call_soon(self._burst_over)
        self._burst += 1
        if len(self.server.connections) + self._burst <= self.limit:
            return self.server()
        self.refused += 1
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._log.warning("listener.connections_refused", count=self.refused,
                              limit=self.limit)  # fmt: skip
            self._last, self.refused = now, 0
        return _Refused()


class CappedSite(web.SockSite):
    """A :class:`aiohttp.web.SockSite` whose connections go through :class:`ConnectionCap`."""

    def __init__(
        self,
        runner: web.AppRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int | None,
    ) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context)
        self._socket = sock
        self._limit = limit

    async def start(self) -> None:
        if self._limit is None:
            await super().start()
            return
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            ConnectionCap(server, self._limit), sock=self._socket, ssl=self._ssl_context,
            backlog=self._backlog,
        )  # fmt: skip


#: asyncio's message for a failed ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM).
ACCEPT_FAILED = "socket.accept() out of system resource"


class AcceptErrorThrottle:
    """The event loop's exception handler: failed accepts logged at most once a second.

    When the process runs out of file descriptors, asyncio reports every failed
    ``accept()`` with a traceback, thousands a second, which fills the journal. This
    logs one line a second with how many failed since the last; anything else goes to
    asyncio's default handler.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.failed = 0  # since the last line
        self._last = -interval_s
        self._log = structlog.get_logger("socbridge")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith(ACCEPT_FAILED):
            loop.default_exception_handler(context)
            return
        self.failed += 1
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        exc = context.get("exception")
        self._log.error(
            "listener.accept_failed",
            reason=f"{type(exc).__name__}: {exc}" if exc else ACCEPT_FAILED,
            count=self.failed,
            hint="raise the open-file limit (LimitNOFILE in the unit)",
        )
        self.failed, self._last = 0, now
