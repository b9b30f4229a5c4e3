"""Shared base for socbridge's remote API clients (ConnectWise, SOC desk).

A :class:`RemoteClient` owns (or borrows) one aiohttp ``ClientSession`` and
sends every request through the same three guards: a request-rate limiter
(``aiolimiter.AsyncLimiter``), a concurrency cap (``asyncio.Semaphore``) and a
retry loop. The loop retries 429 (honouring ``Retry-After`` given in seconds or
as an HTTP date), 5xx, timeouts and connection errors with exponential backoff
plus jitter, up to a maximum number of attempts and a maximum delay. Any other
error response, and the last retryable one once attempts run out, is handed to
the client's own error parser (``(status, headers, body) -> Exception``) so each
API keeps its typed exceptions.

Credentials never leave this module in readable form (R15): authentication
headers are produced per request by an ``auth`` callable that reveals
:class:`daemon.service.secrets.Secret` values only into the outgoing headers; they are
never stored on the client, never logged, and never put into exception
messages. URLs in logs and messages lose their userinfo and query string.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import structlog
from aiolimiter import AsyncLimiter
from multidict import CIMultiDictProxy
from yarl import URL

from daemon.connectors.contract import RemoteError, RemoteUnavailableError, RetryAfterTooLongError
from daemon.health import Outage

ErrorParser = Callable[[int, "CIMultiDictProxy[str]", bytes], Exception]
"""Turns a non-retryable error response into the client's typed exception."""

AuthProvider = Callable[[], Mapping[str, str]]
"""Returns the authentication headers for one request (called per attempt)."""

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Requests' worth of the rate limit a background request leaves free for the others.
BACKGROUND_RESERVE = 2
#: How often :meth:`RemoteClient.room` looks, in request intervals: a slot freed is taken
#: within a quarter of one.
ROOM_POLL_INTERVALS = 0.25
#: How long a background request yields at most: under a steady stream of writes the
#: reserve is never free, and the reads that find notes and changes must not starve
#: (about one a second then, each costing the writes one slot's wait).
BACKGROUND_MAX_WAIT_S = 1.0

#: What a request is for, as the API budget counts it (``socbridge_remote_requests_total``):
#: ``poll`` (reconciliation passes), ``read`` (a ticket re-read after a callback, setup
#: and checks), ``write`` (the outbox carrying out a decision, its own look-ups included)
#: or ``fetch`` (a re-read sync asked for). Set with :func:`request_purpose` around the
#: calls; tasks started inside inherit it.
PURPOSES = ("poll", "read", "write", "fetch")
_PURPOSE: ContextVar[str] = ContextVar("socbridge_request_purpose", default="read")


@contextmanager
def request_purpose(purpose: str) -> Iterator[None]:
    """Count the requests made inside the block under ``purpose`` (one of :data:`PURPOSES`)."""
    token = _PURPOSE.set(purpose)
    try:
        yield
    finally:
        _PURPOSE.reset(token)


#: Called for every HTTP attempt: (remote name, method, purpose).
RequestCounter = Callable[[str, str, str], None]
#: ``(remote name, status)`` of an attempt the remote failed: the HTTP status, or ``network``.
ErrorCounter = Callable[[str, str], None]
#: Answers that mean the desk failed the request (not a normal answer about it, as a 404
#: look-up or a 409 safe-update conflict is): credentials refused, throttled, server errors.
FAILED_STATUSES = frozenset({401, 403, 429})


def basic_auth(user: str, password: str) -> dict[str, str]:
    """An HTTP Basic ``Authorization`` header (build it per request, from revealed
    secrets, only to put it on the wire)."""
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Delays are in seconds."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A Retry-After beyond this is not waited out: the request fails with
    # RetryAfterTooLongError instead of blocking a worker for minutes.
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, capped,
        with "equal jitter" so a burst of clients does not retry in lockstep."""
        ceiling = min(self.max_delay, self.base_delay * float(2 ** (attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Limits:
    """Request rate (per second, fractions allowed), concurrency cap and
    per-attempt timeout (seconds)."""

    rate_per_second: float = 10.0
    max_concurrency: int = 4
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0:
            raise ValueError("Limits.rate_per_second must be positive")
        if self.max_concurrency < 1:
            raise ValueError("Limits.max_concurrency must be at least 1")
        if self.timeout <= 0:
            raise ValueError("Limits.timeout must be positive")


@dataclass(frozen=True)
class RemoteResponse:
    """A fully read response."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL = field(repr=False)

    def json(self) -> Any:
        """The body decoded as JSON (``None`` for an empty body)."""
        return orjson.loads(self.body) if self.body else None


def redact_url(url: str | URL) -> str:
    """The URL without userinfo or query string, safe for logs and messages."""
    u = URL(url)
    return str(u.with_user(None).with_password(None).with_query(None).with_fragment(None))


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (where plain http
    to a simulator is acceptable)."""
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP
    date); ``None`` if absent or unparseable. Never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def _make_limiter(rate: float) -> AsyncLimiter:
    # AsyncLimiter(max_rate, period) lets max_rate requests through per period;
    # a rate below 1/s becomes "1 request per 1/rate seconds".
    if rate >= 1:
        return AsyncLimiter(rate, 1.0)
    return AsyncLimiter(1, 1.0 / rate)


class RemoteHealth:
    """Whether a remote answers, as its last request found it, for ``/readyz``.

    Unreachable (network, 5xx) and refusing our credentials (401/403) make it
    unhealthy until a request succeeds again; each change is logged once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.outage: Outage | None = None
        #: Since when it has answered (this process's start, or the end of its last outage).
        self.up_since = datetime.now(UTC)
        self._log = structlog.get_logger("socbridge.remote").bind(remote=name)

    @property
    def healthy(self) -> bool:
        return self.outage is None

    def describe(self, label: str) -> str | None:
        """``'ConnectWise unreachable (…) since 2026-…Z'``, or ``None`` while healthy."""
        return None if self.outage is None else self.outage.describe(label)

    def answered(self) -> None:
        if self.outage is not None:
            was, self.outage = self.outage, None
            self.up_since = datetime.now(UTC)
            self._log.info("remote.up", was=was.reason, down_since=was.since.isoformat())

    def refused(self, status: int) -> None:
        if status in (401, 403):
            self._down(f"refuses our credentials (HTTP {status})")
        elif status >= 500:
            self._down(f"unavailable (HTTP {status})")
        else:
            self.answered()  # a 4xx about one request: the remote itself answers

    def unreachable(self, cause: str) -> None:
        self._down(f"unreachable ({cause})")

    def _down(self, reason: str) -> None:
        if self.outage is None:
            self.outage = Outage(reason)
        elif reason != self.outage.reason:
            self.outage = Outage(reason, self.outage.since)
        else:
            return
        self._log.error("remote.down", reason=reason)


class RemoteClient:
    """Rate-limited, concurrency-capped, retrying HTTP client for one remote API.

    Use as an async context manager, or call :meth:`close`. Pass ``session`` to
    share an existing ``ClientSession`` (it is then not closed here).
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str | URL,
        error_parser: ErrorParser,
        auth: AuthProvider | None = None,
        headers: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.base_url = URL(base_url)
        if self.base_url.user is not None or self.base_url.password is not None:
            # aiohttp would send them as Basic auth and they would end up in
            # logs via the URL; credentials belong in secret files.
            raise RemoteError(
                f"{name}: base URL {redact_url(self.base_url)} embeds credentials; "
                "remove them from the URL and configure them as secrets"
            )
        self.limits = limits or Limits()
        self.retry = retry or RetryPolicy()
        self._error_parser = error_parser
        self._auth = auth
        self._headers = dict(headers or {})
        self._session = session
        self._owns_session = session is None
        self._limiter = _make_limiter(self.limits.rate_per_second)
        self._background_sent = float("-inf")  # loop time the last background request went
        self._semaphore = asyncio.Semaphore(self.limits.max_concurrency)
        self._rng = rng or random.Random()
        self._log = structlog.get_logger("socbridge.remote").bind(remote=name)
        self.attempts_made = 0  # total HTTP attempts, for metrics and tests
        self.health = RemoteHealth(name)
        #: Told of every HTTP attempt (the API budget: socbridge_remote_requests_total).
        self.on_request: RequestCounter | None = None
        #: Told of every attempt the remote failed (see :data:`FAILED_STATUSES`).
        self.on_error: ErrorCounter | None = None

    def __repr__(self) -> str:
        return f"RemoteClient(name={self.name!r}, base_url={redact_url(self.base_url)!r})"

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RemoteError(f"{self.name}: the shared HTTP session is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    def url(self, path: str) -> URL:
        """``path`` joined onto the base URL (a leading slash is optional)."""
        base = str(self.base_url).rstrip("/")
        return URL(base + "/" + path.lstrip("/"), encoded=False)

    async def request(
        self,
        method: str,
        path_or_url: str | URL,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry_ambiguous: bool = True,
        background: bool = False,
    ) -> RemoteResponse:
        """Send one logical request, retrying as the policy allows.

        Returns the response for any status below 400; raises the error
        parser's exception for error responses, :class:`RemoteUnavailableError`
        when the remote was unreachable on every attempt.

        ``retry_ambiguous=False`` stops retries after failures where the remote
        may already have acted (timeouts, dropped connections, 5xx other than
        503), for non-idempotent writes where a duplicate is worse than an error;
        429 and 503 are always retried because the remote did not act.

        ``background=True`` (reconciliation reads) starts the request only while
        the rate limit has room for :data:`BACKGROUND_RESERVE` more besides it,
        or once it waited :data:`BACKGROUND_MAX_WAIT_S`, so requests sent without it
        (the outbox's) queue behind these for one slot at most, and these still go.
        """
        if background:
            await self._leave_room()
        target = path_or_url if isinstance(path_or_url, URL) else self._resolve(path_or_url)
        body = orjson.dumps(json) if json is not None else data
        send_headers = dict(self._headers)
        if json is not None:
            send_headers.setdefault("Content-Type", "application/json")
        if headers:
            send_headers.update(headers)
        safe_target = redact_url(target)
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(method, target, params, body, send_headers)
            if isinstance(outcome, RemoteResponse):
                status = outcome.status
                if status < 400:
                    self.health.answered()
                    return outcome
                retryable = status in RETRYABLE_STATUSES and (
                    retry_ambiguous or status in (429, 503)
                )
                self.health.refused(status)
                if not retryable or attempt >= policy.max_attempts:
                    raise self._error_parser(status, outcome.headers, outcome.body)
                delay = self._delay_for(outcome, attempt, method, safe_target)
                reason = f"HTTP {status}"
            else:
                self.health.unreachable(outcome)
                if not retry_ambiguous or attempt >= policy.max_attempts:
                    raise RemoteUnavailableError(
                        f"{self.name}: {method} {safe_target} failed after {attempt} "
                        f"attempt(s): {outcome}; check the remote is up and reachable",
                        attempts=attempt,
                    )
                delay = policy.backoff(attempt, self._rng)
                reason = outcome
            self._log.warning(
                "remote.retry",
                method=method,
                url=safe_target,
                reason=reason,
                attempt=attempt,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)

    def has_room(self) -> bool:
        """Whether a request could go out now without waiting for the rate cap."""
        return self._limiter.has_capacity(1)

    async def room(self) -> None:
        """Return once the rate limit would let one request go at once.

        The outbox waits here before it settles what an update writes: a value settled
        first and then held for seconds behind the limit may be overwritten meanwhile
        (a burst of changes), and would spend a request on it all the same.
        """
        while not self._limiter.has_capacity(1):  # noqa: ASYNC110
            await asyncio.sleep(ROOM_POLL_INTERVALS / max(self.limits.rate_per_second, 1))

    async def _leave_room(self) -> None:
        reserve = min(BACKGROUND_RESERVE, self._limiter.max_rate - 1)
        loop = asyncio.get_running_loop()
        # The limiter has nothing to await for room: look again each time one more
        # request's worth has leaked out of it. However many wait, one goes each
        # BACKGROUND_MAX_WAIT_S whatever the room (the check and the stamp are one step).
        while not self._limiter.has_capacity(1 + reserve):
            if loop.time() - self._background_sent >= BACKGROUND_MAX_WAIT_S:
                break
            await asyncio.sleep(1 / self.limits.rate_per_second)
        self._background_sent = loop.time()

    def _resolve(self, path_or_url: str) -> URL:
        if path_or_url.startswith(("http://", "https://")):
            return URL(path_or_url)
        return self.url(path_or_url)

    def _delay_for(self, resp: RemoteResponse, attempt: int, method: str, safe: str) -> float:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if retry_after is None:
            return self.retry.backoff(attempt, self._rng)
        if retry_after > self.retry.max_retry_after:
            raise RetryAfterTooLongError(
                f"{self.name}: {method} {safe} got HTTP {resp.status} with Retry-After "
                f"{retry_after:.0f}s, above the configured maximum of "
                f"{self.retry.max_retry_after:.0f}s; retry later or lower the request rate",
                retry_after=retry_after,
            )
        # A little jitter on top so clients told the same moment do not stampede.
        return retry_after + self._rng.uniform(0, min(1.0, self.retry.base_delay))

    def _failed_attempt(self) -> None:
        if self.on_error is not None:
            self.on_error(self.name, "network")

    async def _attempt(
        self,
        method: str,
        target: URL,
        params: Mapping[str, str | int] | None,
        body: bytes | None,
        headers: dict[str, str],
    ) -> RemoteResponse | str:
        """One HTTP attempt: a response, or a short description of why none came."""
        session = self._get_session()
        all_headers = dict(headers)
        if self._auth is not None:
            all_headers.update(self._auth())
        timeout = aiohttp.ClientTimeout(total=self.limits.timeout)
        async with self._semaphore:
            await self._limiter.acquire()
            self.attempts_made += 1
            if self.on_request is not None:
                self.on_request(self.name, method, _PURPOSE.get())
            started = time.monotonic()
            try:
                async with session.request(
                    method,
                    target,
                    params=params,
                    data=body,
                    headers=all_headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as resp:
                    raw = await resp.read()
                    if self.on_error is not None and (
                        resp.status >= 500 or resp.status in FAILED_STATUSES
                    ):
                        self.on_error(self.name, str(resp.status))
                    return RemoteResponse(resp.status, resp.headers, raw, resp.url)
            except TimeoutError:
                self._failed_attempt()
                return f"timed out after {time.monotonic() - started:.1f}s"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                self._failed_attempt()
                # Only the exception type: some aiohttp messages embed the
                # request, and the request carries the credentials.
                return f"connection error ({type(exc).__name__})"
