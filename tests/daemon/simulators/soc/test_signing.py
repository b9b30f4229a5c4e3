"""The simulator's own webhook signer against the reference's vectors, not socbridge's code.

Vectors are from ../shared/reference/zendesk/NOTES.md §3.1. Zendesk's current
page documents ``base64(HMACSHA256(TIMESTAMP + BODY))`` and its test secret;
the signature for that order is the notes' own computation (rechecked by
hand with hmac/hashlib). The only signature Zendesk itself published is on
the older page and matches body-then-timestamp: it still pins the key
handling (secret's UTF-8 bytes) and the base64 output to an official value.
"""

from __future__ import annotations

import ast
from pathlib import Path

from daemon.simulators.soc import signing, webhooks
from daemon.simulators.soc.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

TIMESTAMP = "2021-07-25T10:00:00Z"
BODY = b'{"say": "hello"}'
# Current page: the test secret (base64 of "this_secret_is_for_testing_only",
# used as a string, not decoded) and the TIMESTAMP + BODY signature.
SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
SIGNATURE = "gf3v0LzLRHPUnIdhbvwRDVEvzSb07/QN0GYjSNlkBT0="
# Older page: Zendesk's published vector, which is BODY + TIMESTAMP.
OLD_SECRET = "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA="
OLD_SIGNATURE = "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="


def test_signer_matches_the_reference_vector_for_timestamp_then_body() -> None:
    assert sign(SECRET, TIMESTAMP, BODY) == SIGNATURE


def test_signer_reproduces_zendesks_published_vector_in_its_documented_order() -> None:
    # The older vector is body then timestamp (NOTES §3.1 discrepancy): our
    # order must not match it, and the same HMAC over BODY + TIMESTAMP must.
    assert sign(OLD_SECRET, TIMESTAMP, BODY) != OLD_SIGNATURE
    assert sign(OLD_SECRET, BODY.decode(), TIMESTAMP.encode()) == OLD_SIGNATURE


def test_signature_header_names_are_the_references() -> None:
    assert SIGNATURE_HEADER == "X-Zendesk-Webhook-Signature"
    assert TIMESTAMP_HEADER == "X-Zendesk-Webhook-Signature-Timestamp"


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_the_simulators_signing_path_imports_nothing_from_the_product() -> None:
    # A signer shared with daemon.connectors would mirror its bugs on both sides.
    for module in (signing, webhooks):
        assert module.__file__ is not None
        product = [n for n in _imports(Path(module.__file__)) if n.startswith("daemon.connectors")]
        assert product == [], module.__name__
