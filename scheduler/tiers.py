"""Subscription tiers: parsed once from ``coordinator/tiers.toml``."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from protocol.limits import check_tier_limits

FREE_TIER = "free"
DEFAULT_AGING_S = 600.0


PERIODS = ("month", "year")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class Price:
    """What a tier costs per ``period``; ``price_id`` is the payment provider's id of
    this price (e.g. Stripe's ``price_...``); blank: shown, but not for sale yet."""

    amount: Decimal
    currency: str
    period: str
    price_id: str = ""


@dataclass(frozen=True, slots=True)
class Tier:
    """Limits and fair-share weight of one tier.

    ``weight``: share of agent time while several tiers wait (proportional).
    ``daily_quota``: jobs per UTC day. ``max_concurrent``: jobs assigned or
    running at once per user. ``max_steps`` / ``max_variants`` /
    ``max_guidance``: generation limits checked at submit. ``max_queued``: jobs
    waiting at once per user. ``rank``: display order (low to high).
    ``aging_s``: a job waiting this long is served oldest-first inside its tier.
    """

    name: str
    weight: float
    daily_quota: int
    max_concurrent: int
    max_steps: int
    max_variants: int
    max_guidance: float
    max_queued: int
    rank: int
    aging_s: float = DEFAULT_AGING_S
    price: Price | None = None  # None: not for sale (free, staff tiers)


# integer key -> smallest allowed value
_INT_FIELDS: dict[str, int] = {
    "daily_quota": 0,
    "max_concurrent": 1,
    "max_steps": 1,
    "max_variants": 1,
    "max_queued": 0,
    "rank": -(2**31),
}
_REQUIRED = frozenset(
    {
        "weight",
        "daily_quota",
        "max_concurrent",
        "max_steps",
        "max_variants",
        "max_guidance",
        "max_queued",
        "rank",
    }
)
_KNOWN = _REQUIRED | {"aging_s", "price"}
_PRICE_KEYS = frozenset({"amount", "currency", "period", "price_id"})


def _int(tier: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"tier {tier!r}: {key} must be an integer, got {value!r}")
    minimum = _INT_FIELDS[key]
    if value < minimum:
        raise ValueError(f"tier {tier!r}: {key} must be >= {minimum}, got {value}")
    return value


def _float(tier: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"tier {tier!r}: {key} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"tier {tier!r}: {key} must be a positive finite number, got {value!r}")
    return number


def _price(tier: str, table: Any) -> Price:
    if not isinstance(table, Mapping):
        raise ValueError(f"tier {tier!r}: price must be a table ([tiers.{tier}.price])")
    unknown = sorted(set(table) - _PRICE_KEYS)
    if unknown:
        raise ValueError(f"tier {tier!r}: unknown price keys {unknown}")
    raw = table.get("amount")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"tier {tier!r}: price.amount must be a number, got {raw!r}")
    try:
        amount = Decimal(str(raw)).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise ValueError(f"tier {tier!r}: price.amount must be a number, got {raw!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"tier {tier!r}: price.amount must be positive, got {raw!r}")
    currency = table.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ValueError(f"tier {tier!r}: price.currency must be a code like EUR, got {currency!r}")
    period = table.get("period", "month")
    if period not in PERIODS:
        raise ValueError(f"tier {tier!r}: price.period must be one of {PERIODS}, got {period!r}")
    price_id = table.get("price_id", "")
    if not isinstance(price_id, str) or len(price_id) > 255:
        raise ValueError(f"tier {tier!r}: price.price_id must be a string")
    return Price(amount, currency, str(period), price_id.strip())


def _tier(name: str, table: Any) -> Tier:
    if not isinstance(table, Mapping):
        raise ValueError(f"tier {name!r}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - _KNOWN)
    if unknown:
        raise ValueError(f"tier {name!r}: unknown keys {unknown}; known keys: {sorted(_KNOWN)}")
    missing = sorted(_REQUIRED - set(table))
    if missing:
        raise ValueError(f"tier {name!r}: missing keys {missing}")
    tier = Tier(
        name=name,
        weight=_float(name, "weight", table["weight"]),
        daily_quota=_int(name, "daily_quota", table["daily_quota"]),
        max_concurrent=_int(name, "max_concurrent", table["max_concurrent"]),
        max_steps=_int(name, "max_steps", table["max_steps"]),
        max_variants=_int(name, "max_variants", table["max_variants"]),
        max_guidance=_float(name, "max_guidance", table["max_guidance"]),
        max_queued=_int(name, "max_queued", table["max_queued"]),
        rank=_int(name, "rank", table["rank"]),
        aging_s=_float(name, "aging_s", table.get("aging_s", DEFAULT_AGING_S)),
        price=_price(name, table["price"]) if "price" in table else None,
    )
    # A tier that admits jobs no agent may run would queue them forever.
    check_tier_limits(
        f"tier {name!r}",
        max_steps=tier.max_steps,
        max_guidance=tier.max_guidance,
        max_variants=tier.max_variants,
    )
    return tier


def parse_tiers(config: Mapping[str, Any]) -> dict[str, Tier]:
    """Build tiers from a ``tomllib``-loaded ``tiers.toml`` (``[tiers.<name>]`` tables).

    Raises ``ValueError`` naming the tier and key for anything wrong: unknown
    or missing keys, wrong types, non-positive weights, duplicate ranks, no
    ``free`` tier (the fallback when a subscription expires), or limits above
    the generation limits of :mod:`protocol.limits` (``LimitError``).
    """
    unknown = sorted(set(config) - {"tiers"})
    if unknown:
        raise ValueError(f"tier config: unknown top-level keys {unknown}; expected only [tiers.*]")
    tables = config.get("tiers")
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError("tier config: expected at least one [tiers.<name>] table")
    tiers: dict[str, Tier] = {}
    for name, table in tables.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"tier config: tier name {name!r} must be a simple identifier")
        tiers[name] = _tier(name, table)
    if FREE_TIER not in tiers:
        raise ValueError(
            f"tier config: a {FREE_TIER!r} tier is required (expired tiers fall back to it)"
        )
    ranks: dict[int, str] = {}
    for tier in tiers.values():
        if tier.rank in ranks:
            raise ValueError(
                f"tier config: tiers {ranks[tier.rank]!r} and {tier.name!r} share rank {tier.rank}"
            )
        ranks[tier.rank] = tier.name
    if tiers[FREE_TIER].price is not None:
        raise ValueError(f"tier config: the {FREE_TIER!r} tier cannot have a price")
    return dict(sorted(tiers.items(), key=lambda item: item[1].rank))
