"""Typed errors of the SOC side: API errors from the desk, intake refusals,
installation and configuration problems.

API errors carry the HTTP status and the Zendesk error code and description
from the body (../shared/reference/zendesk/NOTES.md §4.1, cited below as NOTES
§x), never the request's credentials. Callers catch what they mean:
:class:`SocNotFoundError`, :class:`SocConflictError` (a ``safe_update``
collision), :class:`SocValidationError` (422 ``RecordInvalid``),
:class:`SocRateLimitedError` (429 after retries ran out), and so on.
"""

from __future__ import annotations

from typing import Any

import orjson
from multidict import CIMultiDictProxy

from daemon.connectors import contract


class SocError(Exception):
    """Base of every SOC-side error."""


class SocConfigError(SocError):
    """The SOC settings cannot be used; the message names the key and the fix."""


class SocInstallError(SocError):
    """Webhook installation, removal or status could not complete."""


class SocIntakeError(SocError):
    """A webhook delivery was refused; ``reason`` is a short machine-readable code."""

    reason = "refused"


class SocApiError(SocError, contract.RemoteApiError):
    """The SOC desk answered with an error status."""

    side = "soc"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: str | None = None,
        description: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.description = description
        self.details = details


class SocBadRequestError(SocApiError, contract.RemoteInvalidError):
    """400: the request was malformed."""


class SocIdempotencyError(SocBadRequestError):
    """400 ``IdempotentRequestError``: the idempotency key was reused with other parameters."""


class SocAuthError(SocApiError, contract.RemoteAuthError):
    """401: the email/token pair was refused."""


class SocForbiddenError(SocApiError, contract.RemoteAuthError):
    """403: the API user lacks the role for this call."""


class SocNotFoundError(SocApiError, contract.RemoteNotFoundError):
    """404 ``RecordNotFound``."""


class SocConflictError(SocApiError, contract.RemoteConflictError):
    """409: ``UpdateConflict`` (safe_update saw a newer ticket) or ``DatabaseConflict``."""


class SocValidationError(SocApiError, contract.RemoteInvalidError):
    """422 ``RecordInvalid``: ``details`` maps fields to their problems."""


class SocRateLimitedError(SocApiError, contract.RemoteRateLimitedError):
    """429 still answered after every retry."""


class SocServerError(SocApiError, contract.RemoteServerError):
    """5xx still answered after every retry."""


_BY_STATUS: dict[int, type[SocApiError]] = {
    400: SocBadRequestError,
    401: SocAuthError,
    403: SocForbiddenError,
    404: SocNotFoundError,
    409: SocConflictError,
    410: SocNotFoundError,
    422: SocValidationError,
    429: SocRateLimitedError,
}

_HINTS = {
    401: "check the configured SOC email and API token",
    403: "give the SOC API user the admin role",
    404: "check the id; the record may have been deleted",
    409: "re-read the ticket and retry the change on top of the newer data",
    422: "fix the fields named in the details",
    429: "lower the configured request rate or wait",
}


def parse_error(status: int, headers: CIMultiDictProxy[str], body: bytes) -> SocApiError:
    """Turn an error response into the matching :class:`SocApiError`.

    Understands the classic ``{"error", "description", "details"}`` body and
    the newer ``{"errors": [{"code", "title", "detail"}]}`` body (NOTES §4.1);
    a non-JSON body (``text/plain``) is kept as the description, shortened.
    """
    error: str | None = None
    description: str | None = None
    details: Any = None
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
        description = body[:200].decode("utf-8", "replace").strip() or None
    if isinstance(doc, dict):
        if isinstance(doc.get("error"), str):
            error = doc["error"]
            raw_desc = doc.get("description")
            description = raw_desc if isinstance(raw_desc, str) else None
            details = doc.get("details")
        elif isinstance(doc.get("errors"), list) and doc["errors"]:
            first = doc["errors"][0] if isinstance(doc["errors"][0], dict) else {}
            error = first.get("code")
            description = first.get("detail") or first.get("title")
            details = doc["errors"]
    if status == 400 and error == "IdempotentRequestError":
        cls: type[SocApiError] = SocIdempotencyError
    elif status >= 500:
        cls = SocServerError
    else:
        cls = _BY_STATUS.get(status, SocApiError)
    what = f"SOC API answered HTTP {status}"
    if error:
        what += f" {error}"
    if description:
        what += f": {description}"
    if details:
        what += f" {orjson.dumps(details).decode()[:300]}"
    hint = _HINTS.get(status, "retry later; if it persists, check the SOC desk's status")
    return cls(
        f"{what}; {hint}", status=status, error=error, description=description, details=details
    )
