"""daemon.connectors.remote against a tiny real aiohttp app on loopback."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from structlog.testing import capture_logs

from daemon.connectors.contract import RemoteError, RemoteUnavailableError, RetryAfterTooLongError
from daemon.connectors.remote import (
    Limits,
    RemoteClient,
    RetryPolicy,
    is_loopback_host,
    parse_retry_after,
    redact_url,
)
from daemon.service.secrets import Secret

SECRET_VALUE = "very-secret-private-key-123"
FAST = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, max_retry_after=5)


class ApiError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"api error {status}")
        self.status = status
        self.body = body


def parse_error(status: int, headers: CIMultiDictProxy[str], body: bytes) -> Exception:
    return ApiError(status, body)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/api"

    yield start
    for r in runners:
        await r.cleanup()


def auth() -> dict[str, str]:
    secret = Secret(SECRET_VALUE)
    token = base64.b64encode(f"user:{secret.reveal()}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client(base: str, **kw: object) -> RemoteClient:
    kw.setdefault("retry", FAST)
    return RemoteClient(name="test", base_url=base, error_parser=parse_error, auth=auth, **kw)  # type: ignore[arg-type]


async def test_success_sends_auth_and_json(serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[tuple[str, str, str | None, bytes]] = []

    async def h(req: web.Request) -> web.Response:
        seen.append((req.method, req.path, req.headers.get("Authorization"), await req.read()))
        return web.json_response({"ok": True})

    base = await serve(h)
    async with client(base) as c:
        resp = await c.request("POST", "/things", json={"a": 1})
    assert resp.status == 200 and resp.json() == {"ok": True}
    method, path, authz, body = seen[0]
    assert (method, path, body) == ("POST", "/api/things", b'{"a":1}')
    assert authz is not None and authz.startswith("Basic ")
    assert SECRET_VALUE not in repr(c)


async def test_429_storm_then_success_honours_retry_after_and_writes_once(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    calls: list[float] = []
    written: list[bytes] = []

    async def h(req: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            return web.json_response(
                {"code": "TooMany"}, status=429, headers={"Retry-After": "0.2"}
            )
        written.append(await req.read())
        return web.json_response({"id": 1}, status=201)

    base = await serve(h)
    async with client(base) as c:
        resp = await c.request("POST", "tickets", json={"x": 1}, retry_ambiguous=False)
    assert resp.status == 201
    assert written == [b'{"x":1}']
    assert c.attempts_made == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(g >= 0.19 for g in gaps), gaps


async def test_retry_after_http_date_in_past_retries_immediately(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    n = 0

    async def h(req: web.Request) -> web.Response:
        nonlocal n
        n += 1
        if n == 1:
            past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
            return web.Response(status=429, headers={"Retry-After": past})
        return web.Response(text="ok")

    base = await serve(h)
    async with client(base) as c:
        resp = await c.request("GET", "x")
    assert resp.body == b"ok" and n == 2


async def test_retry_after_too_long_fails_fast(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def h(req: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "3600"})

    base = await serve(h)
    async with client(base) as c:
        with pytest.raises(RetryAfterTooLongError) as ei:
            await c.request("GET", "x")
    assert ei.value.retry_after == 3600
    assert c.attempts_made == 1


async def test_5xx_burst_then_success_writes_once(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    written: list[bytes] = []
    n = 0

    async def h(req: web.Request) -> web.Response:
        nonlocal n
        n += 1
        if n <= 3:
            return web.Response(status=(502, 500, 503)[n - 1])
        written.append(await req.read())
        return web.json_response({"id": 7}, status=201)

    base = await serve(h)
    async with client(base) as c:
        resp = await c.request("POST", "t", json={"s": "x"})
    assert resp.json() == {"id": 7} and written == [b'{"s":"x"}'] and n == 4


async def test_5xx_exhausted_goes_to_error_parser(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def h(req: web.Request) -> web.Response:
        return web.Response(status=500, body=b'{"code":"Boom"}')

    base = await serve(h)
    async with client(base) as c:
        with pytest.raises(ApiError) as ei:
            await c.request("GET", "x")
    assert ei.value.status == 500 and ei.value.body == b'{"code":"Boom"}'
    assert c.attempts_made == FAST.max_attempts


async def test_non_retryable_error_is_parsed_after_one_attempt(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def h(req: web.Request) -> web.Response:
        return web.Response(status=400, body=b'{"code":"InvalidObject"}')

    base = await serve(h)
    async with client(base) as c:
        with pytest.raises(ApiError) as ei:
            await c.request("PATCH", "x", json=[])
    assert ei.value.status == 400 and c.attempts_made == 1


async def test_unambiguous_only_when_retry_ambiguous_false(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    statuses = [503, 500, 200]

    async def h(req: web.Request) -> web.Response:
        return web.Response(status=statuses.pop(0))

    base = await serve(h)
    async with client(base) as c:
        # 503 is retried (the server did not act), 500 is not (it may have).
        with pytest.raises(ApiError) as ei:
            await c.request("POST", "x", json={}, retry_ambiguous=False)
    assert ei.value.status == 500 and c.attempts_made == 2


async def test_timeout_is_retried(serve: Callable[[Handler], Awaitable[str]]) -> None:
    never = asyncio.Event()
    n = 0

    async def h(req: web.Request) -> web.Response:
        nonlocal n
        n += 1
        if n == 1:
            await never.wait()  # hang until the client gives up
        return web.Response(text="late ok")

    base = await serve(h)
    try:
        # Long enough that the second (prompt) answer is not also timed out on a loaded host:
        # 0.3 s was, at load 10 (the whole attempt, connect included, shares the busy loop).
        async with client(base, limits=Limits(timeout=1.0)) as c:
            resp = await c.request("GET", "x")
    finally:
        never.set()  # let the hung handler finish so the server shuts down promptly
    assert resp.body == b"late ok" and c.attempts_made == 2 and n == 2


async def test_unreachable_raises_without_secrets(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def h(req: web.Request) -> web.Response:
        return web.Response(body=b"alive")

    base = await serve(h)
    # Find a port nobody listens on by binding and closing one.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(RemoteError) as embedded:
        client(f"http://user:{SECRET_VALUE}@127.0.0.1:{port}/api")
    assert SECRET_VALUE not in str(embedded.value)
    dead = f"http://127.0.0.1:{port}/api"
    with capture_logs() as logs:
        async with client(dead) as c:
            with pytest.raises(RemoteUnavailableError) as ei:
                await c.request("GET", "x", params={"token": SECRET_VALUE})
    assert ei.value.attempts == FAST.max_attempts
    assert SECRET_VALUE not in str(ei.value)
    assert SECRET_VALUE not in repr(c)
    assert [e["event"] for e in logs].count("remote.retry") == FAST.max_attempts - 1
    # The remote going away is said once, not once per attempt; its health says since when.
    assert [e["event"] for e in logs].count("remote.down") == 1
    assert c.health.describe("Test").startswith("Test unreachable (connection error")
    assert all(SECRET_VALUE not in repr(entry) for entry in logs)
    # A dead remote fails only its own requests: the live one still answers.
    async with client(base) as live:
        answered = await live.request("GET", "x")
    assert (answered.status, answered.body) == (200, b"alive")


async def test_concurrency_cap(serve: Callable[[Handler], Awaitable[str]]) -> None:
    inflight = 0
    peak = 0

    async def h(req: web.Request) -> web.Response:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.03)  # simulated server work, so requests overlap
        inflight -= 1
        return web.Response()

    base = await serve(h)
    async with client(base, limits=Limits(max_concurrency=2, rate_per_second=1000)) as c:
        await asyncio.gather(*(c.request("GET", f"x{i}") for i in range(8)))
    assert peak == 2


async def test_rate_limit(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def h(req: web.Request) -> web.Response:
        return web.Response()

    base = await serve(h)
    async with client(base, limits=Limits(rate_per_second=40, max_concurrency=50)) as c:
        started = time.monotonic()
        await asyncio.gather(*(c.request("GET", "x") for i in range(52)))
        elapsed = time.monotonic() - started
    # 40 pass in the initial burst; the other 12 need ~0.3 s at 40/s.
    assert elapsed >= 0.25, elapsed


async def test_background_requests_leave_room_for_the_others(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: list[str] = []
    saturated = asyncio.Event()

    async def h(req: web.Request) -> web.Response:
        seen.append(req.path.rsplit("/", 1)[-1])
        if len(seen) == 8:
            saturated.set()
        return web.Response()

    base = await serve(h)
    async with client(base, limits=Limits(rate_per_second=20, max_concurrency=50)) as c:
        # A reconciliation pass queues far more reads than the rate lets through...
        background = asyncio.gather(
            *(c.request("GET", f"b{i}", background=True) for i in range(40))
        )
        await saturated.wait()
        # ...and a delivery made meanwhile does not queue behind them: it goes out
        # with at most the reads already on their way ahead of it (measured: none).
        # First come, first served, 14 to 19 queued reads went first. Counted from the moment of
        # the call, not timed, so a host that stalls the test still sees the difference.
        before = len(seen)
        await c.request("GET", "delivery")
        await background
    assert len(seen) == 41
    assert seen.index("delivery") - before <= 5, (before, seen)
    # Below one request a second the limit holds one at a time: nothing is reserved,
    # and a background request still goes out.
    async with client(base, limits=Limits(rate_per_second=0.5)) as c:
        await asyncio.wait_for(c.request("GET", "slow", background=True), 5)
    assert seen[-1] == "slow"


async def test_background_requests_still_go_under_a_steady_stream_of_others(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: list[str] = []
    busy = asyncio.Event()

    async def h(req: web.Request) -> web.Response:
        seen.append(req.path.rsplit("/", 1)[-1])
        if len(seen) == 12:
            busy.set()
        return web.Response()

    base = await serve(h)
    async with client(base, limits=Limits(rate_per_second=10, max_concurrency=50)) as c:

        async def reads() -> None:
            await busy.wait()
            for n in range(2):  # one after the other, as a poller reads
                await c.request("GET", f"read{n}", background=True)

        reading = asyncio.ensure_future(reads())

        async def writes(w: int) -> None:
            # The outbox keeps the limit full: never room for the reserve. Bounded, so
            # reads that never go fail the test rather than hanging it.
            for n in range(25):
                if reading.done():
                    return
                await c.request("GET", f"w{w}-{n}")

        await asyncio.gather(*(writes(w) for w in range(3)))
        assert reading.done()
        await reading
    # Each read yields to the writes for BACKGROUND_MAX_WAIT_S at most (about 10 of them
    # at 10/s), then goes: well before the 75 the writers would have sent.
    assert seen.index("read1") < 50, seen


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0
    when = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(format_datetime(when, usegmt=True), now=now) == 30


def test_redact_url_and_policy_validation() -> None:
    assert redact_url("https://u:p@h.example/a/b?key=s#f") == "https://h.example/a/b"
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost")
    assert not is_loopback_host("na.myconnectwise.net") and not is_loopback_host(None)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        Limits(rate_per_second=0)
    rng = random.Random(1)
    delays = [RetryPolicy(base_delay=1, max_delay=4).backoff(a, rng) for a in range(1, 6)]
    assert all(0.5 <= d <= 4 for d in delays) and delays[-1] >= 2
