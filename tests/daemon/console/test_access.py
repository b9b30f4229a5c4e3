"""Who may use the console: loopback by default, tokens otherwise, CSRF on every action.

Against the daemon itself (the rehearsal's simulators and the real app), over HTTP on
loopback; the browser tests (test_browser.py) drive the same pages in Chromium.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme
from pydantic import ValidationError

from daemon.console.auth import MAX_SESSIONS, Sessions
from daemon.service.config import AdminSettings
from daemon.simulators.harness import Bridge
from daemon.simulators.rehearsal import write_config
from projections import kinds
from tests.support.paths import REPO

TOKEN = "4f1c0d9e7b2a45c8b3e6a1d0c9f87e65"


def console_url(bridge: Bridge, path: str = "/") -> str:
    assert bridge.config is not None and bridge.config.admin is not None
    return f"http://127.0.0.1:{bridge.config.admin.port}{path}"


async def with_token(bridge: Bridge, tmp_path: Path) -> None:
    """Restart the daemon with a token file (``alice``) guarding the console."""
    tokens = tmp_path / "console.tokens"
    tokens.write_text(f"# who: token\nalice:{TOKEN}\n")
    tokens.chmod(0o600)
    assert bridge.config is not None and bridge.config.admin is not None
    admin = bridge.config.admin.model_copy(update={"token": str(tokens)})
    await bridge.stop_daemon()
    await bridge.start_daemon(bridge.config.model_copy(update={"admin": admin}))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def test_with_a_token_file_every_page_needs_a_token_and_actions_name_its_owner(
    bridge: Bridge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await with_token(bridge, tmp_path)
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(
            console_url(bridge), headers={"Accept": "text/html"}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login?next=/"
        async with anonymous.get(console_url(bridge, "/links")) as resp:
            assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
        async with anonymous.get(
            console_url(bridge), headers={"Authorization": "Bearer " + TOKEN[::-1]}
        ) as resp:
            assert resp.status == 401
        async with anonymous.post(
            console_url(bridge, "/login"), data={"token": "wrong", "next": "/"}
        ) as resp:
            assert resp.status == 401 and "not valid" in await resp.text()
        async with anonymous.get(
            console_url(bridge), headers={"Authorization": "Bearer " + TOKEN}
        ) as resp:
            assert resp.status == 200 and "alice" in await resp.text()
            assert resp.headers["X-Frame-Options"] == "DENY"

    # A browser keeps cookies of an IP address host; aiohttp's jar only when told to.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(
            console_url(bridge, "/login"), data={"token": TOKEN, "next": "/tenants"},
            allow_redirects=False,
        ) as resp:  # fmt: skip
            assert resp.status == 303 and resp.headers["Location"] == "/tenants"
            cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with browser.get(console_url(bridge, "/tenants")) as resp:
            page = await resp.text()
            assert resp.status == 200 and "alice" in page
        head = await bridge.store.last_position()
        async with browser.post(console_url(bridge, "/tenants/acme/disable")) as resp:
            assert resp.status == 403 and "CSRF" in await resp.text()
        assert await bridge.store.last_position() == head  # refused: nothing appended
        async with browser.post(
            console_url(bridge, "/tenants/acme/disable"), data={"csrf": csrf_of(page)}
        ) as resp:
            assert resp.status == 200 and "Sync for acme is now off" in await resp.text()
    switched = [e async for e in bridge.store.read() if e.type == kinds.TENANT_SYNC_DISABLED]
    assert [(e.data["tenant"], e.data["operator"]) for e in switched] == [("acme", "alice")]
    assert TOKEN not in capsys.readouterr().out  # never in a log line


async def test_a_post_without_the_sessions_csrf_token_is_refused_on_loopback_too(
    bridge: Bridge,
) -> None:
    jar = aiohttp.CookieJar
    async with (
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as one,
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as other,
    ):
        async with one.get(console_url(bridge, "/tenants")) as resp:
            theirs = csrf_of(await resp.text())
        async with other.get(console_url(bridge, "/tenants")) as resp:
            assert resp.status == 200
        head = await bridge.store.last_position()
        # Another session's token is no good: it is bound to the session it was given to.
        async with other.post(
            console_url(bridge, "/tenants/acme/disable"), data={"csrf": theirs}
        ) as resp:
            assert resp.status == 403
        async with aiohttp.ClientSession() as fresh:
            async with fresh.post(console_url(bridge, "/tenants/acme/disable")) as resp:
                assert resp.status == 403
    assert await bridge.store.last_position() == head


def test_a_console_on_a_public_address_needs_a_token_and_tls() -> None:
    with pytest.raises(ValidationError, match="not a loopback address, without token and tls_cert"):
        AdminSettings(listen="0.0.0.0:8790")
    with pytest.raises(ValidationError, match="without tls_cert"):
        AdminSettings(listen="[2001:db8::1]:8790", token="/etc/socbridge/console.tokens")
    with pytest.raises(ValidationError, match="is not HOST:PORT"):
        AdminSettings(listen="8790")
    assert AdminSettings().listen == "127.0.0.1:8790"
    assert AdminSettings(listen="[::1]:9000").host == "::1"


def test_run_refuses_to_start_a_public_console_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "socbridge.toml"
    write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 0, 5.0)
    config.write_text(config.read_text() + '\n[admin]\nlisten = "0.0.0.0:8790"\n')
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"socbridge: error: configuration {config} is invalid:",
        "  admin: the console listens on 0.0.0.0, not a loopback address, without token and "
        "tls_cert; set token, tls_cert and tls_key, or listen on 127.0.0.1 and open it over "
        "an SSH tunnel",
    ]
    assert not (tmp_path / "events.db").exists()  # refused before the log was opened


def test_a_token_file_without_a_usable_token_stops_the_start_before_the_log(
    tmp_path: Path,
) -> None:
    config = tmp_path / "socbridge.toml"
    write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 0, 5.0)
    tokens = tmp_path / "console.tokens"
    tokens.write_text("alice:abc123\n")
    tokens.chmod(0o600)
    config.write_text(
        config.read_text() + f'\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "{tokens}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "shorter than 16 characters" in done.stderr and "openssl rand" in done.stderr
    assert "abc123" not in done.stderr  # not even a token too short to use
    assert not (tmp_path / "events.db").exists()


def test_a_taken_console_port_is_named_before_the_log_is_opened(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "socbridge.toml"
        write_config(config, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 0, 5.0,
                     console_port=port)  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "run", "--config", str(config)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"socbridge: error: port {port} on 127.0.0.1 is taken by another process; stop it, "
        "or set [admin] listen to a free one"
    )
    assert not (tmp_path / "events.db").exists()


async def test_the_console_serves_tls_when_given_a_certificate(
    bridge: Bridge, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "console.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "console.key"))
    (tmp_path / "console.key").chmod(0o600)
    assert bridge.config is not None and bridge.config.admin is not None
    admin = bridge.config.admin.model_copy(
        update={"tls_cert": tmp_path / "console.pem", "tls_key": tmp_path / "console.key"}
    )
    await bridge.stop_daemon()
    await bridge.start_daemon(bridge.config.model_copy(update={"admin": admin}))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as https:
        async with https.get(f"https://127.0.0.1:{admin.port}/", ssl=trusted) as resp:
            assert resp.status == 200 and "Overview" in await resp.text()
            assert "Secure" in resp.headers["Set-Cookie"]  # the cookie never goes over HTTP


def test_sessions_are_bounded_and_a_forgotten_one_has_no_csrf_token() -> None:
    sessions = Sessions()
    first = sessions.open("local")
    for _ in range(MAX_SESSIONS):
        sessions.open("local")
    assert sessions.get(first) is None  # the least recently used went first
    assert sessions.csrf_ok(first, sessions.csrf(first))  # the token is bound to the id...
    assert not sessions.csrf_ok(None, sessions.csrf(first))  # ...and useless without it
