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

import ssl

from aiohttp import web

from daemon.service.config import ConfigError, ServerSettings
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


async def start_sites(runner: web.AppRunner, server: ServerSettings) -> list[web.TCPSite]:
    """Start the main (and optional admin) listeners on a set-up runner."""
    sites = [web.TCPSite(runner, server.host, server.port, ssl_context=listener_ssl(server))]
    if server.admin_port is not None:
        sites.append(web.TCPSite(runner, server.admin_host, server.admin_port))
    for site in sites:
        await site.start()
    return sites
