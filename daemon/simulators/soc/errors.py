"""Error responses of the SOC simulator, exactly as the reference gives them.

Bodies follow §4.1 of ../shared/reference/zendesk/NOTES.md (cited below as
NOTES §x): 404 ``RecordNotFound`` (OAS, verbatim), 422 ``RecordInvalid`` with
per-field details, 409 ``UpdateConflict`` (§2.5), 400
``IdempotentRequestError`` (§2.6). Bodies the reference does not give (401,
403, malformed JSON) are inferred and marked so where they are built.
"""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    """An API error response: HTTP status, JSON body and extra headers."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def not_found() -> SimError:
    return SimError(404, {"error": "RecordNotFound", "description": "Not found"})


def record_invalid(field_name: str, description: str, error: str | None = None) -> SimError:
    item: dict[str, Any] = {"description": description}
    if error:
        item["error"] = error
    return SimError(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field_name: [item]},
        },
    )


def bad_request(description: str) -> SimError:
    # Inferred: Zendesk's body for unparseable input was not found in the reference.
    return SimError(400, {"error": "InvalidJSON", "description": description})


def unauthorized() -> SimError:
    # Inferred (NOTES §7.4: the 401 body was not found); this is the body
    # Zendesk is widely seen to send for bad credentials.
    return SimError(
        401,
        {"error": "Couldn't authenticate you"},
        {"WWW-Authenticate": 'Basic realm="Web Password"'},
    )


def forbidden() -> SimError:
    # Inferred: the body of a 403 for a user without the needed role.
    return SimError(
        403,
        {
            "error": "Forbidden",
            "description": "You do not have access to this page. Please contact the account "
            "owner of this help desk for further help.",
        },
    )


def too_many_requests(retry_after: int) -> SimError:
    # NOTES §4.1/§4.2: 429 with Retry-After in seconds; the errors[] body of newer endpoints.
    return SimError(
        429,
        {"errors": [{"code": "TooManyRequests", "title": "Too many requests"}]},
        {"Retry-After": str(retry_after)},
    )


def server_error(status: int) -> SimError:
    # Inferred: a generic 5xx body (the reference gives none).
    return SimError(status, {"error": "InternalError", "description": "Simulated server failure"})


def webhook_invalid(detail: str, pointer: str) -> SimError:
    # Inferred: the webhooks API is a newer API and answers with errors[] (NOTES §4.1 newer-style).
    return SimError(
        400,
        {
            "errors": [
                {
                    "code": "InvalidValue",
                    "title": "Invalid value",
                    "detail": detail,
                    "source": {"pointer": pointer},
                }
            ]
        },
    )


def webhook_not_found() -> SimError:
    return SimError(
        404,
        {
            "errors": [
                {"code": "WebhookNotFound", "title": "Webhook not found", "detail": "Not found"}
            ]
        },
    )
