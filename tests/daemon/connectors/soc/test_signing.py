"""Webhook signature checks (NOTES §3.1): vector, and every way a delivery is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.connectors.soc.signing import (
    SignatureMismatchError,
    SignatureMissingError,
    TimestampFutureError,
    TimestampInvalidError,
    TimestampStaleError,
    sign,
    verify,
)
from daemon.service.secrets import Secret

DOC_SECRET = Secret("dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==")
DOC_TS = "2021-07-25T10:00:00Z"
DOC_BODY = b'{"say": "hello"}'
NOW = datetime(2021, 7, 25, 10, 1, 0, tzinfo=UTC)


def check(
    secret: Secret, sig: str | None, ts: str | None, body: bytes, now: datetime = NOW
) -> datetime:
    return verify(secret, sig, ts, body, now=now, tolerance_seconds=300, max_future_seconds=5)


def test_signature_matches_the_reference_vector() -> None:
    # NOTES §3.1: timestamp + body with the secret's UTF-8 bytes.
    assert sign(DOC_SECRET, DOC_TS, DOC_BODY) == "gf3v0LzLRHPUnIdhbvwRDVEvzSb07/QN0GYjSNlkBT0="


def test_old_docs_body_then_timestamp_vector_is_not_our_order() -> None:
    old_secret = Secret("HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=")
    assert sign(old_secret, DOC_TS, DOC_BODY) != "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="


def test_valid_signature_is_accepted() -> None:
    sig = sign(DOC_SECRET, DOC_TS, DOC_BODY)
    assert check(DOC_SECRET, sig, DOC_TS, DOC_BODY) == datetime(2021, 7, 25, 10, 0, tzinfo=UTC)


def test_wrong_secret_is_refused() -> None:
    sig = sign(Secret("another-secret"), DOC_TS, DOC_BODY)
    with pytest.raises(SignatureMismatchError):
        check(DOC_SECRET, sig, DOC_TS, DOC_BODY)


def test_body_altered_by_one_byte_is_refused() -> None:
    sig = sign(DOC_SECRET, DOC_TS, DOC_BODY)
    altered = DOC_BODY.replace(b"hello", b"hellp")
    assert len(altered) == len(DOC_BODY)
    with pytest.raises(SignatureMismatchError):
        check(DOC_SECRET, sig, DOC_TS, altered)


def test_timestamp_swapped_after_signing_is_refused() -> None:
    sig = sign(DOC_SECRET, DOC_TS, DOC_BODY)
    with pytest.raises(SignatureMismatchError):
        check(DOC_SECRET, sig, "2021-07-25T10:00:01Z", DOC_BODY)


def test_stale_timestamp_is_refused_even_when_signed() -> None:
    sig = sign(DOC_SECRET, DOC_TS, DOC_BODY)
    with pytest.raises(TimestampStaleError, match="old"):
        check(DOC_SECRET, sig, DOC_TS, DOC_BODY, now=NOW + timedelta(minutes=5))


def test_timestamp_just_inside_five_minutes_is_accepted() -> None:
    sig = sign(DOC_SECRET, DOC_TS, DOC_BODY)
    check(DOC_SECRET, sig, DOC_TS, DOC_BODY, now=datetime(2021, 7, 25, 10, 5, 0, tzinfo=UTC))


def test_future_timestamp_is_refused() -> None:
    ts = "2021-07-25T10:02:00Z"
    sig = sign(DOC_SECRET, ts, DOC_BODY)
    with pytest.raises(TimestampFutureError, match="future"):
        check(DOC_SECRET, sig, ts, DOC_BODY)


@pytest.mark.parametrize("ts", ["yesterday", "2021-07-25T10:00:00", ""])
def test_unparseable_or_zoneless_timestamp_is_refused(ts: str) -> None:
    sig = sign(DOC_SECRET, ts, DOC_BODY)
    with pytest.raises((TimestampInvalidError, SignatureMissingError)):
        check(DOC_SECRET, sig, ts, DOC_BODY)


def test_missing_signature_is_refused() -> None:
    with pytest.raises(SignatureMissingError):
        check(DOC_SECRET, None, DOC_TS, DOC_BODY)


def test_garbage_signature_is_refused_without_crashing() -> None:
    with pytest.raises(SignatureMismatchError):
        check(DOC_SECRET, "not base64 at all!!", DOC_TS, DOC_BODY)


def test_refusal_messages_never_contain_the_secret_or_expected_signature() -> None:
    expected = sign(DOC_SECRET, DOC_TS, DOC_BODY)
    with pytest.raises(SignatureMismatchError) as info:
        check(DOC_SECRET, "AAAA", DOC_TS, DOC_BODY)
    text = str(info.value) + repr(info.value)
    assert DOC_SECRET.reveal() not in text
    assert expected not in text


@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_is_refused(body: bytes, data: st.DataObject) -> None:
    sig = sign(DOC_SECRET, DOC_TS, body)
    i = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    altered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    assert check(DOC_SECRET, sig, DOC_TS, body)
    with pytest.raises(SignatureMismatchError):
        check(DOC_SECRET, sig, DOC_TS, altered)
