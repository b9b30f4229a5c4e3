"""Verifying ConnectWise callback signatures and caching signing keys.

The documented way (../shared/reference/connectwise/NOTES.md §4), as two
independent implementations agree: the ``x-content-signature`` header is
``base64(HMAC-SHA256(SHA256(signing_key), raw_body))``, where the signing key
is fetched from the payload's ``Metadata.key_url`` (``{"signing_key":
"..."}``). The key_url comes from the request and is attacker-controlled, so
:func:`check_key_url` refuses any URL whose origin (scheme, host, port) is not
the configured ConnectWise site *before* anything is fetched; the fetch follows
no redirects and uses no proxy. Keys are cached per key_url for a TTL; a
signature that fails against a cached key triggers at most one re-fetch per
key_url per ``min_refetch`` seconds (key rotation), so forged requests cannot
make socbridge hammer ConnectWise.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from daemon.connectors.connectwise.errors import ConnectWiseError
from daemon.service.secrets import Secret


class SignatureError(ConnectWiseError):
    """A callback's signature or key_url is not acceptable (answered 4xx)."""


class KeyFetchError(ConnectWiseError):
    """The signing key could not be fetched (answered 503 so ConnectWise retries)."""


class UnknownSigningKeyError(SignatureError):
    """ConnectWise says the key_url's key does not exist: the callback is not its own
    (answered 401; a retry would get the same answer)."""


SIGNATURE_HEADER = "x-content-signature"


def mac_key(signing_key: Secret) -> bytes:
    """The HMAC key a signing key stands for: ``SHA256(signing_key)``."""
    return hashlib.sha256(signing_key.reveal().encode("utf-8")).digest()


def sign(signing_key: Secret, body: bytes) -> str:
    """The ``x-content-signature`` value ConnectWise sends with ``body``."""
    mac = keyed(mac_key(signing_key))
    mac.update(body)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify(signing_key: Secret, body: bytes, header: str | None) -> None:
    """Constant-time check of an ``x-content-signature`` over the raw body;
    :class:`SignatureError` unless it matches."""
    verify_mac(mac_key(signing_key), body, header)


def verify_mac(key: bytes | hmac.HMAC, body: bytes, header: str | None) -> None:
    """:func:`verify` with the HMAC key (:func:`mac_key`) already derived, or an HMAC
    keyed with it (:func:`keyed`; copied, never updated)."""
    if not header:
        raise SignatureError(f"{SIGNATURE_HEADER} header is missing")
    try:
        # What base64.b64decode(validate=True) does, without its wrapper's conversions.
        given = binascii.a2b_base64(header.strip(), strict_mode=True)
    except (binascii.Error, ValueError):
        given = b""
    mac = key.copy() if isinstance(key, hmac.HMAC) else keyed(key)
    mac.update(body)
    if not hmac.compare_digest(mac.digest(), given):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")


def keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``key`` and fed nothing yet.

    Not ``hmac.digest()``: that one-shot form releases the GIL for any body, and on
    the daemon's event loop, with the store's threads waiting for the GIL, getting
    it back after a few microseconds of hashing can take far longer than the hashing
    (the loop stalls meanwhile). An HMAC object's ``update`` keeps the GIL for bodies
    under 2 KiB (a callback's size) and releases it only for larger ones.
    """
    return hmac.new(key, digestmod=hashlib.sha256)


class SigningKey:
    """A fetched signing key with its HMAC keyed once: every callback signed with it is
    checked on a copy, without hashing the key (or its pads) again. Never shows either."""

    __slots__ = ("_mac", "secret")

    def __init__(self, secret: Secret) -> None:
        self.secret = secret
        self._mac = keyed(mac_key(secret))

    def verify(self, body: bytes, header: str | None) -> None:
        """:func:`verify` with this key."""
        verify_mac(self._mac, body, header)

    def __repr__(self) -> str:
        return "SigningKey('***')"


class CallbackSigner:
    """A ConnectWise signing key as a :class:`~daemon.connectors.contract.Signer`."""

    def __init__(self, signing_key: Secret) -> None:
        self._key = signing_key

    def sign(self, body: bytes, timestamp: str = "") -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(self._key, body)}

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        verify(self._key, body, headers.get(SIGNATURE_HEADER))


def check_key_url(key_url: object, site_url: str) -> URL:
    """The parsed key_url if its origin is the configured ConnectWise site."""
    if not isinstance(key_url, str) or not key_url:
        raise SignatureError("Metadata.key_url is missing")
    return _checked_key_url(key_url, site_url)


@functools.lru_cache(maxsize=64)
def _checked_key_url(key_url: str, site_url: str) -> URL:
    # Every callback of a site names the same few key URLs: parse each once. Bounded, and
    # a refused URL raises, so nothing a forger sends stays cached.
    try:
        url = URL(key_url)
        origin = url.origin()
    except ValueError:
        raise SignatureError("Metadata.key_url is not an absolute URL") from None
    if url.user or url.password:
        raise SignatureError("Metadata.key_url carries credentials")
    if origin != URL(site_url).origin():
        raise SignatureError(
            f"Metadata.key_url host {url.host}:{url.port} is not the configured ConnectWise "
            f"site {URL(site_url).host}; refused without fetching it"
        )
    return url


@dataclass
class _Entry:
    key: SigningKey
    fetched_at: float


class SigningKeyCache:
    """Signing keys per key_url, fetched on demand with a TTL."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        client_id: str | None = None,
        ttl: float = 3600.0,
        min_refetch: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._client_id = client_id
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._timeout = timeout
        self._clock = clock
        # Keyed by the URL itself (hashable, equal when its text is): no string is built
        # from it per callback.
        self._keys: dict[URL, _Entry] = {}
        #: key_url -> when ConnectWise last said it names no key: refused without asking
        #: again for ``min_refetch`` seconds, so forged callbacks cannot make us hammer it.
        self._unknown: dict[URL, float] = {}
        self.fetches = 0  # for metrics and tests

    def __repr__(self) -> str:
        return f"SigningKeyCache(keys={len(self._keys)})"

    async def get(self, key_url: URL, *, refresh: bool = False) -> SigningKey | None:
        """The key for ``key_url``; ``refresh`` re-fetches unless it was fetched
        within ``min_refetch`` seconds (then ``None``: nothing new to try)."""
        now = self._clock()
        refused_at = self._unknown.get(key_url)
        if refused_at is not None and now - refused_at < self._min_refetch:
            raise UnknownSigningKeyError(
                f"ConnectWise has no signing key for the callback's key_url on {key_url.host}"
            )
        entry = self._keys.get(key_url)
        if entry is not None:
            age = now - entry.fetched_at
            if not refresh and age < self._ttl:
                return entry.key
            if refresh and age < self._min_refetch:
                return None
        try:
            key = SigningKey(await self._fetch(key_url))
        except UnknownSigningKeyError:
            self._unknown[key_url] = self._clock()
            raise
        self._unknown.pop(key_url, None)
        self._keys[key_url] = _Entry(key, self._clock())
        return key

    async def _fetch(self, key_url: URL) -> Secret:
        self.fetches += 1
        headers = {"clientId": self._client_id} if self._client_id else {}
        try:
            async with self._session.get(
                key_url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                status = resp.status
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KeyFetchError(
                f"cannot fetch the callback signing key from {key_url.host} ({type(exc).__name__})"
            ) from None
        if status in (404, 410):
            # ConnectWise answered, and it has no such key: a forged or stale callback.
            raise UnknownSigningKeyError(
                f"ConnectWise has no signing key for the callback's key_url on {key_url.host} "
                f"(HTTP {status})"
            )
        if status != 200:
            # Anything else (5xx, 429, a proxy's error) may pass: ConnectWise retries later.
            raise KeyFetchError(
                f"callback signing key fetch from {key_url.host} gave HTTP {status}"
            )
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        value = doc.get("signing_key") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise KeyFetchError(f"callback key URL on {key_url.host} returned no signing_key")
        return Secret(value)
