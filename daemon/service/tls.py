"""The inbound listener's TLS policy (R13): TLS 1.2 and 1.3, the guide's ciphers only.

The vendor guide names ELBSecurityPolicy-TLS13-1-2-2021-06: protocols TLSv1.2
and TLSv1.3 and a fixed cipher list. :func:`server_context` builds an
``ssl.SSLContext`` that enforces exactly that:

* protocols: ``minimum_version = TLSv1_2`` and ``maximum_version = TLSv1_3``,
  so TLS 1.0/1.1 (and SSLv3) clients fail the handshake;
* TLS 1.2: ``set_ciphers`` with exactly the eight ECDHE suites below, so any
  other TLS 1.2 suite (RSA key exchange, CBC-SHA1, DHE...) fails the handshake;
* TLS 1.3: Python 3.11's ``ssl`` has no way to set OpenSSL's ``Ciphersuites``
  (``set_ciphers`` only touches TLS <= 1.2). OpenSSL 3's built-in TLS 1.3 set
  is exactly the guide's three suites, so the policy is enforced by checking
  the context's TLS 1.3 suites at start and refusing to serve if they differ.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# The guide lists "TLS-CHACHAZO-POLY1305-SHA256": a typo of
# TLS_CHACHA20_POLY1305_SHA256 (the AWS policy it quotes has CHACHA20).
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
)


class TlsPolicyError(Exception):
    """The TLS settings cannot be served as the policy requires; says which and why."""


def policy_context() -> ssl.SSLContext:
    """A server context with the R13 protocol and cipher policy, no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(":".join(TLS12_CIPHERS))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    offered = {c["name"] for c in ctx.get_ciphers()}
    tls13 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"}
    tls12 = offered - tls13
    if tls13 != TLS13_SUITES:
        raise TlsPolicyError(
            f"this OpenSSL ({ssl.OPENSSL_VERSION}) offers TLS 1.3 suites {sorted(tls13)}, "
            f"not the guide's {sorted(TLS13_SUITES)}; Python 3.11 cannot change them"
        )
    if tls12 != set(TLS12_CIPHERS):
        raise TlsPolicyError(
            f"this OpenSSL ({ssl.OPENSSL_VERSION}) offers TLS 1.2 ciphers {sorted(tls12)}, "
            f"not the guide's list"
        )
    return ctx


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The listener's context: the R13 policy with the certificate chain and key loaded."""
    ctx = policy_context()
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        # The message names the files, never their contents.
        raise TlsPolicyError(
            f"server.tls_cert {cert} / server.tls_key {key} cannot be loaded: "
            f"{type(exc).__name__}; check both paths, permissions and that the key matches"
        ) from None
    return ctx
