"""Typed errors of the ConnectWise side, and the parser that makes them.

ConnectWise answers errors with a JSON body ``{"code", "message", "errors":
[{"code", "message", "resource", "field"}]}``
(../shared/reference/connectwise/NOTES.md §5). :func:`parse_error` turns a
non-2xx response into the matching subclass of :class:`ConnectWiseApiError`,
keeping the code and the field errors, so callers catch what they mean: 400
:class:`BadRequestError` (and :class:`ObjectExistsError` when a field error
says ``ObjectExists``), 401 :class:`AuthenticationError`, 403
:class:`PermissionDeniedError`, 404 :class:`NotFoundError`, 409
:class:`ConflictError`, 429 :class:`RateLimitedError`, 5xx
:class:`ServerError`. Messages never carry credentials: only the status,
ConnectWise's own code and message, and a hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from daemon.connectors import contract


class ConnectWiseError(Exception):
    """Base of every error raised by :mod:`daemon.connectors.connectwise`."""


class ConnectWiseConfigError(ConnectWiseError):
    """The ConnectWise settings cannot be used; the message says which key and the fix."""


class CodebaseNotFoundError(ConnectWiseError):
    """``/login/companyinfo/{companyId}`` did not know the company (body ``null``)."""


class CodebaseUnreachableError(ConnectWiseError, contract.RemoteUnavailableError):
    """The codebase look-up could not reach the site (network or timeout): time may fix it."""


@dataclass(frozen=True)
class FieldError:
    """One entry of the ``errors`` array of a ConnectWise error body."""

    code: str
    message: str
    resource: str | None = None
    field: str | None = None


_HINTS = {
    400: "fix the request (see the field errors)",
    401: "check the company id, public key and private key of the API member",
    403: "grant the missing permission to the API member's security role",
    404: "check the record id, and the site URL and codebase",
    409: "the record conflicts with another one; re-read it and retry",
    410: "the record is gone from ConnectWise",
    422: "the record fails a ConnectWise validation rule (see the field errors); fix the rule "
    "or the record",
    429: "ConnectWise is rate limiting; lower the request rate",
}


class ConnectWiseApiError(ConnectWiseError, contract.RemoteApiError):
    """ConnectWise answered with an error status."""

    side = "cw"

    def __init__(
        self, status: int, code: str, message: str, errors: tuple[FieldError, ...] = ()
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        detail = "; ".join(
            f"{e.field or e.resource or '?'}: {e.code} {e.message}".strip() for e in errors
        )
        hint = _HINTS.get(
            status,
            "ConnectWise refused the request"
            if status < 500
            else "retry later; ConnectWise had a server error",
        )
        text = f"ConnectWise HTTP {status} {code}: {message}"
        if detail:
            text += f" ({detail})"
        super().__init__(f"{text}; {hint}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The ``field`` names the error body blames."""
        return tuple(e.field for e in self.errors if e.field)


class BadRequestError(ConnectWiseApiError, contract.RemoteInvalidError):
    """400: the request was malformed or a field was invalid."""


class ObjectExistsError(BadRequestError):
    """400 with a field error ``ObjectExists`` (e.g. a duplicate callback entry)."""


class AuthenticationError(ConnectWiseApiError, contract.RemoteAuthError):
    """401: company id or key pair refused."""


class PermissionDeniedError(ConnectWiseApiError, contract.RemoteAuthError):
    """403: the API member's security role lacks a permission."""


class NotFoundError(ConnectWiseApiError, contract.RemoteNotFoundError):
    """404: no such record, or no such endpoint (wrong codebase)."""


class ConflictError(ConnectWiseApiError, contract.RemoteConflictError):
    """409: the record conflicts with another one."""


class RateLimitedError(ConnectWiseApiError, contract.RemoteRateLimitedError):
    """429 after every retry."""


class ServerError(ConnectWiseApiError, contract.RemoteServerError):
    """5xx after every retry."""


class GoneError(NotFoundError):
    """410: the record was removed."""


class UnprocessableError(ConnectWiseApiError, contract.RemoteInvalidError):
    """422: the request was understood but a rule refused it."""


_BY_STATUS: Mapping[int, type[ConnectWiseApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> ConnectWiseApiError:
    """The typed exception for an error response (any body, even non-JSON)."""
    code, message, errors = _decode_body(status, body)
    if status >= 500:
        cls: type[ConnectWiseApiError] = ServerError
    else:
        cls = _BY_STATUS.get(status, ConnectWiseApiError)
    if cls is BadRequestError and any(e.code == "ObjectExists" for e in errors):
        cls = ObjectExistsError
    return cls(status, code, message, errors)


def _decode_body(status: int, body: bytes) -> tuple[str, str, tuple[FieldError, ...]]:
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        # Not ConnectWise's own body (a proxy or Cloudflare page): keep a short
        # excerpt so the operator can tell what answered.
        excerpt = body[:200].decode("utf-8", "replace").strip() or "(empty body)"
        return f"HTTP{status}", excerpt, ()
    raw_errors = doc.get("errors")
    errors = tuple(
        FieldError(
            code=str(e.get("code", "")),
            message=str(e.get("message", "")),
            resource=e.get("resource") if isinstance(e.get("resource"), str) else None,
            field=e.get("field") if isinstance(e.get("field"), str) else None,
        )
        for e in (raw_errors if isinstance(raw_errors, list) else [])
        if isinstance(e, dict)
    )
    return str(doc.get("code") or f"HTTP{status}"), str(doc.get("message") or ""), errors
