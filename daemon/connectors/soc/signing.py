"""Zendesk webhook signatures: ``base64(HMAC-SHA256(secret, TIMESTAMP + BODY))``.

The SOC desk signs every webhook delivery with the webhook's signing secret and
sends the result in ``X-Zendesk-Webhook-Signature`` and the timestamp it signed
in ``X-Zendesk-Webhook-Signature-Timestamp``
(../shared/reference/zendesk/NOTES.md §3.1). The key is the secret string's
UTF-8 bytes, not its base64 decoding; the order is timestamp then body (the
current docs and every public implementation; the older docs'
body-then-timestamp vector is a documented discrepancy).

:func:`verify` is the intake's check: the timestamp must parse, be no older
than the tolerance and not lie in the future (beyond a small clock skew), and
the signature must match in constant time. Each failure is its own
:class:`SignatureError` subclass with a message that names what was wrong but
never the secret or the expected signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from daemon.connectors.soc.errors import SocIntakeError
from daemon.service.secrets import Secret

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"


class SignatureError(SocIntakeError):
    """A webhook delivery's signature could not be accepted."""

    reason = "bad_signature"


class SignatureMissingError(SignatureError):
    reason = "signature_missing"


class TimestampInvalidError(SignatureError):
    reason = "timestamp_invalid"


class TimestampStaleError(SignatureError):
    reason = "timestamp_stale"


class TimestampFutureError(SignatureError):
    reason = "timestamp_in_future"


class SignatureMismatchError(SignatureError):
    reason = "signature_mismatch"


def sign(secret: Secret, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(
        secret.reveal().encode("utf-8"), timestamp.encode("utf-8") + body, hashlib.sha256
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def parse_timestamp(value: str) -> datetime:
    """The signature timestamp (ISO 8601, e.g. ``2021-07-25T10:00:00Z``) as UTC."""
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TimestampInvalidError(
            f"{TIMESTAMP_HEADER} {value[:40]!r} is not an ISO 8601 timestamp"
        ) from None
    if when.tzinfo is None:
        raise TimestampInvalidError(f"{TIMESTAMP_HEADER} {value[:40]!r} has no time zone")
    return when.astimezone(UTC)


def verify(
    secret: Secret,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: datetime,
    tolerance_seconds: float,
    max_future_seconds: float,
) -> datetime:
    """Check one delivery; return its signed timestamp or raise SignatureError."""
    if not signature or not timestamp:
        missing = SIGNATURE_HEADER if not signature else TIMESTAMP_HEADER
        raise SignatureMissingError(f"webhook delivery has no {missing} header; refused")
    when = parse_timestamp(timestamp)
    age = (now - when).total_seconds()
    if age > tolerance_seconds:
        raise TimestampStaleError(
            f"webhook signature timestamp {timestamp[:40]} is {age:.0f}s old, beyond the "
            f"{tolerance_seconds:.0f}s limit; refused as a possible replay"
        )
    if -age > max_future_seconds:
        raise TimestampFutureError(
            f"webhook signature timestamp {timestamp[:40]} is {-age:.0f}s in the future; "
            "refused (check the clocks of this host and the SOC)"
        )
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        given = b""
    expected = base64.b64decode(sign(secret, timestamp, body))
    if not hmac.compare_digest(given, expected):
        raise SignatureMismatchError(
            "webhook signature does not match the body and timestamp for the configured "
            "signing secret; refused (if the webhook was reinstalled, run "
            "'socbridge webhooks install' again to store its new secret)"
        )
    return when


class WebhookSigner:
    """A webhook signing secret as a :class:`~daemon.connectors.contract.Signer`: the
    headers the desk sends, and the intake's check of them within the time window."""

    def __init__(
        self,
        secret: Secret,
        *,
        tolerance_seconds: float = 300.0,
        max_future_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secret = secret
        self._tolerance = tolerance_seconds
        self._max_future = max_future_seconds
        self._clock = clock

    def sign(self, body: bytes, timestamp: str) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(self._secret, timestamp, body), TIMESTAMP_HEADER: timestamp}

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        verify(
            self._secret,
            headers.get(SIGNATURE_HEADER),
            headers.get(TIMESTAMP_HEADER),
            body,
            now=self._clock(),
            tolerance_seconds=self._tolerance,
            max_future_seconds=self._max_future,
        )
