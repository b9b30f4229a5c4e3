"""R13 over loopback: real TLS clients against the listener's context."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from daemon.service.config import ConfigError, ServerSettings
from daemon.service.listener import listener_ssl
from daemon.service.tls import TLS12_CIPHERS, TLS13_SUITES, TlsPolicyError, server_context
from daemon.simulators.trust import RehearsalTls, write_rehearsal_tls


@pytest.fixture
def tls(tmp_path: Path) -> RehearsalTls:
    return write_rehearsal_tls(tmp_path / "tls", "127.0.0.1")


@pytest.fixture
async def served(tls: RehearsalTls) -> AsyncIterator[tuple[int, Path]]:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(tls.cert, tls.key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, tls.ca
    await runner.cleanup()


def client(ca: Path, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    # Let the client offer old protocols/ciphers: only the server may refuse them.
    ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    with warnings.catch_warnings():
        # Offering TLS 1.0 and 1.1 is the point: the server must refuse them.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


async def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    ssl_obj = writer.get_extra_info("ssl_object")
    result = (ssl_obj.version(), ssl_obj.cipher()[0])
    writer.close()
    await writer.wait_closed()
    return result


async def test_tls13_and_each_listed_tls12_cipher_are_served(served: tuple[int, Path]) -> None:
    port, ca = served
    version, suite = await handshake(port, client(ca, ssl.TLSVersion.TLSv1_3))
    assert version == "TLSv1.3" and suite in TLS13_SUITES
    # The rehearsal certificate is ECDSA (trustme's default): every listed
    # ECDSA cipher must work; the RSA ones need an RSA certificate.
    ecdsa = [c for c in TLS12_CIPHERS if "ECDSA" in c]
    assert len(ecdsa) == 4
    for cipher in ecdsa:
        assert await handshake(port, client(ca, ssl.TLSVersion.TLSv1_2, cipher)) == (
            "TLSv1.2",
            cipher,
        )


@pytest.fixture
async def permissive(tls: RehearsalTls) -> AsyncIterator[int]:
    """A control server that accepts everything: proves the weak clients below can connect."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(tls.cert, tls.key)
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0, ssl=ctx)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def refused(port: int, ca: Path, control: int, ctx: ssl.SSLContext) -> None:
    """The control server completes the handshake with ``ctx``; the listener does not."""
    await handshake(control, ctx)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await handshake(port, ctx)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_old_protocols_fail_the_handshake(
    served: tuple[int, Path], permissive: int, version: ssl.TLSVersion
) -> None:
    port, ca = served
    await refused(port, ca, permissive, client(ca, version))


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-SHA",  # CBC with SHA-1
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-CHACHA20-POLY1305",  # strong, but not in the guide's TLS 1.2 list
        "ECDHE-ECDSA-AES128-CCM",
    ],
)
async def test_tls12_ciphers_outside_the_list_fail_the_handshake(
    served: tuple[int, Path], permissive: int, cipher: str
) -> None:
    port, ca = served
    await refused(port, ca, permissive, client(ca, ssl.TLSVersion.TLSv1_2, cipher))


def test_the_context_offers_exactly_the_guides_suites() -> None:
    from daemon.service.tls import policy_context

    names = {c["name"] for c in policy_context().get_ciphers()}
    assert names == set(TLS12_CIPHERS) | TLS13_SUITES


def test_plain_http_only_when_allowed_and_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert"):
        listener_ssl(ServerSettings())  # neither TLS nor allow_plain_http
    assert listener_ssl(ServerSettings(allow_plain_http=True)) is None
    with pytest.raises(ValueError, match="loopback"):
        ServerSettings(host="0.0.0.0", allow_plain_http=True)
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        ServerSettings(tls_cert=tmp_path / "c.pem")


def test_unreadable_certificate_is_a_clear_error_without_contents(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TlsPolicyError, match="tls_cert") as err:
        server_context(tmp_path / "missing.pem", key)
    assert "c2VjcmV0" not in str(err.value)
