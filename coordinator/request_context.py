"""What every endpoint, HTML or JSON, reads from a request: the farm, the client's
address, bounded query parameters."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request

from coordinator.farm.engine import Farm
from coordinator.i18n import gettext


def farm_of(request: Request) -> Farm:
    farm: Farm = request.app.state.farm
    return farm


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


MAX_PAGES = 10_000  # of every paged HTML list


def int_param(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; otherwise a 400 that says so."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    # Digits only, and few of them: int() of a huge string costs CPU, and an
    # out-of-range value would reach the database (an overflow, a 500).
    text = raw.strip()
    digits = text[1:] if text[:1] == "-" else text
    problem = gettext("%(name)s must be a whole number from %(low)s to %(high)s.") % {
        "name": name,
        "low": low,
        "high": high,
    }
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise HTTPException(400, problem)
    value = int(text)
    if not low <= value <= high:
        raise HTTPException(400, problem)
    return value
