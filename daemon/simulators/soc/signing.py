"""The SOC simulator's own webhook signer, written from the reference alone.

Zendesk signs each webhook delivery as ``base64(HMACSHA256(TIMESTAMP + BODY))``
keyed by the signing secret string's UTF-8 bytes (not its base64 decoding),
and sends the result and the timestamp it signed in two headers
(../shared/reference/zendesk/NOTES.md §3.1).

This deliberately imports nothing from ``daemon.connectors``: the simulator
stands in for the vendor, so if it borrowed socbridge's own signing code a
bug there would be mirrored on both sides and no test would catch it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# NOTES §3.1: "the main signature" and "the timestamp used to verify the signature".
SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Zendesk-Webhook-Signature`` value for ``body`` signed at ``timestamp``.

    Timestamp first, then body: the current Zendesk page and every public
    implementation use that order; the older page's body-then-timestamp
    wording and vector are a documented discrepancy (NOTES §3.1).
    """
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")
