"""The edge of the JSON API: request bodies, query strings and path segments decoded
into the types of :mod:`coordinator.api.schemas` (strictly: no coercion, unknown fields
refused), msgspec's complaints turned into the API's error shape, and JSON answers."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api.errors import ApiError, ErrorCode, ErrorDetail, Loc
from coordinator.api.schemas import PROMPT_PATTERN

T = TypeVar("T")

_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_FIELD = re.compile(r"field `(?P<name>[^`]+)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


# msgspec names a pattern by its regex; people get words.
_REGEX = re.compile(r"matching regex '(?P<regex>.*)'")
_PATTERN_WORDS = {
    repr(PROMPT_PATTERN)[1:-1]: "with something other than spaces and no control characters",
    r"^[A-Za-z0-9_-]+\\Z": "of letters, digits, '_' and '-'",
}


def _words(text: str) -> str:
    match = _REGEX.search(text)
    if match and match["regex"] in _PATTERN_WORDS:
        return text[: match.start()] + _PATTERN_WORDS[match["regex"]] + text[match.end() :]
    return text


def _invalid(exc: msgspec.ValidationError, where: str, what: str) -> ApiError:
    """A 422 naming where the (first) problem is: ``["body", "steps"]``."""
    text = _words(str(exc))
    loc: Loc = [where]
    match = _AT.match(text)
    if match:
        text = match["what"]
        for name, index in _STEP.findall(match["path"]):
            loc.append(int(index) if index else name)
    else:
        field = _FIELD.search(text)
        if field:
            loc.append(field["name"])
    return ApiError(
        ErrorCode.VALIDATION_FAILED,
        f"Invalid {what}: {text} (at {'.'.join(map(str, loc))}).",
        [ErrorDetail(loc, text)],
    )


async def read_body(request: Request) -> bytes:
    """The request's body, whole (the body limit middleware bounds it).

    Read it before opening a database session, then check the caller's key,
    then :func:`decode_body`: a slow client holds no database connection, and
    a stranger learns nothing from a 422 before a 401."""
    return await request.body()


def decode_body(raw: bytes, kind: type[T]) -> T:
    """A JSON body as ``kind`` (an empty body is ``{}``).

    Strict: no strings for numbers, no numbers for strings, no fractions for
    integers. A whole number written as a float (``12.0``) is an integer, as
    JSON Schema says."""
    raw = raw or b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        first = exc
    except msgspec.DecodeError as exc:
        raise _not_json(str(exc)) from None
    except RecursionError:
        raise _not_json(_TOO_DEEP) from None
    # msgspec stops at the first wrong type, even in text that is no JSON at all,
    # and it refuses 12.0 for an integer: look again at the whole value.
    try:
        value = _whole_numbers(msgspec.json.decode(raw))
        return msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError:
        raise _invalid(first, "body", "body") from None
    except msgspec.DecodeError as exc:
        raise _not_json(str(exc)) from None
    except RecursionError:
        raise _not_json(_TOO_DEEP) from None


_TOO_DEEP = "nested too deeply"


def _not_json(why: str) -> ApiError:
    return ApiError(
        ErrorCode.INVALID_JSON, f"The body is not valid JSON: {why}.", [ErrorDetail(["body"], why)]
    )


def _whole_numbers(value: Any) -> Any:
    """``value`` with every float that is a whole number as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def read_query(request: Request, kind: type[T]) -> T:
    """The query string as ``kind``; empty values count as absent, repeats are refused."""
    values: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in values:
            raise ApiError(
                ErrorCode.VALIDATION_FAILED,
                f"The query parameter {name!r} is given more than once.",
                [ErrorDetail(["query", name], "given more than once")],
            )
        if value != "":
            values[name] = value
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, "query", "query parameter") from None


def read_path(request: Request, kind: type[T], code: ErrorCode = ErrorCode.NOT_FOUND) -> T:
    """The path parameters as ``kind``; a segment that cannot name anything is a 404."""
    try:
        return msgspec.convert(dict(request.path_params), kind, strict=True)
    except msgspec.ValidationError as exc:
        error = _invalid(exc, "path", "path")
        raise ApiError(code, error.message, error.details) from None


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` (a response struct) encoded by msgspec."""
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")
