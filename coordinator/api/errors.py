"""The JSON API's errors: one shape and a stable machine-readable code for every one.

Every error under ``/api`` — raised by an endpoint, by routing (404, 405), by the
body limit (413) or by a crash (500) — answers::

    {"error": {"code": "validation_failed", "message": "…", "details": [...]}}

``code`` is one of :class:`ErrorCode` and never changes meaning; ``message`` is
English text for people; ``details`` lists each problem with where it is
(``loc``: ``["body", "steps"]``, ``["query", "limit"]``, ``["path", "fmt"]``).
Clients branch on ``code`` (and may translate it), never on ``message``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from coordinator.i18n import gettext_noop as N_


class ErrorCode(enum.StrEnum):
    """The stable error codes of the JSON API (docs/api.md lists them)."""

    INVALID_JSON = "invalid_json"
    BAD_REQUEST = "bad_request"
    VALIDATION_FAILED = "validation_failed"
    JOB_REJECTED = "job_rejected"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    ACCOUNT_SUSPENDED = "account_suspended"
    NOT_FOUND = "not_found"
    JOB_NOT_FOUND = "job_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    JOB_FINISHED = "job_finished"
    MODEL_NOT_READY = "model_not_ready"
    BODY_TOO_LARGE = "body_too_large"
    IMAGE_INVALID = "image_invalid"
    IMAGE_UNSUPPORTED = "image_unsupported"
    IMAGE_TOO_LARGE = "image_too_large"
    WEBHOOK_URL_INVALID = "webhook_url_invalid"
    WEBHOOK_SECRET_MISSING = "webhook_secret_missing"  # noqa: S105 (a code, not a secret)
    WEBHOOK_URLS_EXCEEDED = "webhook_urls_exceeded"
    QUOTA_EXCEEDED = "quota_exceeded"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    HTTP_ERROR = "http_error"


@dataclass(frozen=True)
class CodeInfo:
    status: int | None  # None: any status (the response's own)
    description: str  # English; marked for the reference page's translation


CODES: dict[ErrorCode, CodeInfo] = {
    ErrorCode.INVALID_JSON: CodeInfo(400, N_("The body is not valid JSON (or not UTF-8).")),
    ErrorCode.BAD_REQUEST: CodeInfo(400, N_("The request is malformed in another way.")),
    ErrorCode.VALIDATION_FAILED: CodeInfo(
        422,
        N_(
            "The body, a query parameter or a path segment does not match the schema: "
            "a wrong type, a value out of range, a missing or an unknown field. "
            "details says where."
        ),
    ),
    ErrorCode.JOB_REJECTED: CodeInfo(
        422,
        N_(
            "A well-formed job request that cannot be accepted: a blank prompt, control "
            "characters, or more steps, guidance or variants than your plan allows."
        ),
    ),
    ErrorCode.UNAUTHORIZED: CodeInfo(
        401,
        N_("No API key, or the key is malformed, unknown or revoked."),
    ),
    ErrorCode.FORBIDDEN: CodeInfo(403, N_("The key is valid but may not do this.")),
    ErrorCode.ACCOUNT_SUSPENDED: CodeInfo(
        403, N_("The key's account is suspended by an administrator.")
    ),
    ErrorCode.NOT_FOUND: CodeInfo(404, N_("No such endpoint or download format.")),
    ErrorCode.JOB_NOT_FOUND: CodeInfo(
        404, N_("No such job, or it is not yours (the two are not told apart).")
    ),
    ErrorCode.METHOD_NOT_ALLOWED: CodeInfo(
        405, N_("The endpoint exists but not with this method; the Allow header lists them.")
    ),
    ErrorCode.JOB_FINISHED: CodeInfo(409, N_("The job has already finished.")),
    ErrorCode.MODEL_NOT_READY: CodeInfo(409, N_("The job has no model yet.")),
    ErrorCode.BODY_TOO_LARGE: CodeInfo(413, N_("The request body is over the server's limit.")),
    ErrorCode.IMAGE_INVALID: CodeInfo(
        422,
        N_(
            "The image is truncated or damaged, animated, too small, or has other data "
            "hidden after its end; nothing was stored."
        ),
    ),
    ErrorCode.IMAGE_UNSUPPORTED: CodeInfo(
        422, N_("The image is not a PNG, JPEG or WebP file; nothing was stored.")
    ),
    ErrorCode.IMAGE_TOO_LARGE: CodeInfo(
        422, N_("The image is over 10 MB or over 4096×4096 pixels; nothing was stored.")
    ),
    ErrorCode.WEBHOOK_URL_INVALID: CodeInfo(
        422,
        N_(
            "The job's webhook_url cannot be called: not http(s), a user name in it, "
            "over 2000 characters, or a loopback, private or reserved address."
        ),
    ),
    ErrorCode.WEBHOOK_SECRET_MISSING: CodeInfo(
        409,
        N_(
            "The key has no webhook secret to sign the job's webhook with; create one "
            "on your profile page (Webhooks), then submit again."
        ),
    ),
    ErrorCode.WEBHOOK_URLS_EXCEEDED: CodeInfo(
        429,
        N_(
            "Your waiting and running jobs already name 5 different webhook URLs; reuse "
            "one or retry once some of those jobs ended."
        ),
    ),
    ErrorCode.QUOTA_EXCEEDED: CodeInfo(
        429,
        N_("Your daily quota or your plan's cap on queued jobs is reached; retry later."),
    ),
    ErrorCode.RATE_LIMITED: CodeInfo(429, N_("Too many requests; retry later.")),
    ErrorCode.INTERNAL_ERROR: CodeInfo(500, N_("A bug on our side; it has been logged.")),
    ErrorCode.HTTP_ERROR: CodeInfo(None, N_("Any other HTTP error; the status says which.")),
}

# The code of an error that came as a bare HTTP status (routing, middleware, plain
# HTTPException); endpoints raise ApiError with a more specific code.
BY_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.BODY_TOO_LARGE,
    422: ErrorCode.VALIDATION_FAILED,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.INTERNAL_ERROR,
}

Loc = list[str | int]


class ErrorDetail(msgspec.Struct, frozen=True):
    """One problem: where it is and what is wrong."""

    loc: Loc
    message: str


class ErrorInfo(msgspec.Struct, frozen=True):
    code: ErrorCode
    message: str
    details: list[ErrorDetail] = []


class ErrorBody(msgspec.Struct, frozen=True):
    """The body of every error response under /api."""

    error: ErrorInfo


class ApiError(Exception):
    """An error answer of the JSON API; raise it from endpoints and helpers."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: Sequence[ErrorDetail] = (),
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.status = status or CODES[code].status or 500
        self.headers = dict(headers or {})
        if code is ErrorCode.UNAUTHORIZED:
            self.headers.setdefault("WWW-Authenticate", 'Bearer realm="shapefarm"')

    def response(self) -> Response:
        body = ErrorBody(ErrorInfo(self.code, self.message, self.details))
        return Response(
            msgspec.json.encode(body),
            status_code=self.status,
            media_type="application/json",
            headers={"Cache-Control": "no-store", **self.headers},
        )


def is_api(path: str) -> bool:
    """Whether ``path`` is answered by the JSON API (errors as JSON)."""
    return path.startswith("/api/")


def from_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiError:
    """The API error for a bare HTTP status (routing, middleware, HTTPException)."""
    code = BY_STATUS.get(status, ErrorCode.HTTP_ERROR)
    return ApiError(code, message, status=status, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Exception handler for :class:`ApiError` (installed by the app)."""
    assert isinstance(exc, ApiError)
    return exc.response()


def http_exception_response(exc: HTTPException) -> Response:
    """A Starlette HTTPException under /api (unknown path, wrong method, ...), as JSON."""
    message = exc.detail
    if exc.status_code == 404:
        message = "No such endpoint; see /api/v1/openapi.json."
    elif exc.status_code == 405:
        message = "This endpoint does not accept this method; see the Allow header."
    return from_status(exc.status_code, message, exc.headers).response()


def internal_error_response() -> Response:
    return ApiError(ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.").response()


def body_limit_refusal(
    max_bytes: int, larger: Mapping[str, int] | None = None
) -> Callable[[str], Response | None]:
    """The body limit middleware's 413 for a path: JSON under /api, else its default.
    ``larger``: paths with their own limit (uploads)."""

    def refusal(path: str) -> Response | None:
        if not is_api(path):
            return None
        limit = (larger or {}).get(path, max_bytes)
        return ApiError(
            ErrorCode.BODY_TOO_LARGE,
            f"The request body is over the limit of {limit} bytes.",
            headers={"Connection": "close"},
        ).response()

    return refusal
