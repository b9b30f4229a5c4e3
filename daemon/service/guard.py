"""Who may call which route (R14), and what a refused or failed request sees.

:func:`guard_middleware` runs before every handler. The inbound routes
(ConnectWise callbacks, SOC webhooks) answer only peers inside
``server.allowed_sources``; the admin routes (``/healthz``, ``/readyz``,
``/metrics``) only peers inside ``server.admin_sources`` (loopback by
default; both follow a configuration reload). The peer is the TCP peer
address of the connection; forwarding headers are ignored, so a caller
cannot claim another address. A refused request gets a 403 before its body
is read, so nothing is appended. Any unexpected error becomes a bare 500
with no stack trace; the trace goes to the log only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

Network = IPv4Network | IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Refused = Callable[[str, str], None]  # (route kind, reason)
Sources = tuple[Network, ...] | Callable[[], tuple[Network, ...]]

ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def peer_address(request: web.Request) -> IPv4Address | IPv6Address | None:
    """The connection's peer address (never a forwarding header)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer:
        return None
    return _parse_peer(peer[0])


@lru_cache(maxsize=4096)
def _parse_peer(host: str) -> IPv4Address | IPv6Address | None:
    """Parse a peer host once: the same few peers call every second, and parsing
    the address again on every request would be a large share of the guard's cost."""
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed(address: IPv4Address | IPv6Address | None, networks: Iterable[Network]) -> bool:
    """Whether ``address`` is inside one of ``networks`` (unknown peers never are)."""
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def _current(sources: Sources) -> tuple[Network, ...]:
    return sources() if callable(sources) else sources


def guard_middleware(
    inbound: Sources,
    admin: Sources,
    on_refused: Refused | None = None,
    on_handled: Callable[[str, int], None] | None = None,
) -> Middleware:
    """The allowlist + error-hiding middleware for the daemon's application.

    ``inbound`` and ``admin`` are the allowed ranges, or callables giving the
    ranges in effect now (the daemon passes its applied config's, so a reload
    changes the allowlist for the next request).
    """
    log = structlog.get_logger("socbridge.guard")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = "admin" if request.path in ADMIN_PATHS else "inbound"
        peer = peer_address(request)
        if not allowed(peer, _current(admin if kind == "admin" else inbound)):
            log.warning("request.refused", route=request.path, peer=str(peer), reason="source")
            if on_refused is not None:
                on_refused(kind, "source_not_allowed")
            return web.json_response({"error": "source address not allowed"}, status=403)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if on_handled is not None and kind == "inbound":
                on_handled(_route_label(request), exc.status)
            raise
        except Exception:
            log.exception("request.failed", route=request.path)
            response = web.json_response({"error": "internal error"}, status=500)
        if on_handled is not None and kind == "inbound":
            on_handled(_route_label(request), response.status)
        return response

    return guard


def _route_label(request: web.Request) -> str:
    """The matched route's path (unknown paths share one label: no cardinality blow-up)."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "(unmatched)"
