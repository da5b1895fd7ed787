"""parse_tiers(): the shipped file, and clear errors for bad config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from protocol.limits import MAX_GUIDANCE, MAX_STEPS, MAX_VARIANTS, LimitError
from scheduler import parse_tiers
from tests.support.scheduling import tier_table

SHIPPED = Path(__file__).resolve().parents[2] / "coordinator" / "tiers.toml"


def config(**tiers: dict[str, Any]) -> dict[str, Any]:
    return {"tiers": tiers}


def good(rank: int = 0, **overrides: Any) -> dict[str, Any]:
    return {**tier_table(1.0), "rank": rank, **overrides}


def test_tiers_shipped_file_parses() -> None:
    with SHIPPED.open("rb") as fh:
        tiers = parse_tiers(tomllib.load(fh))
    assert list(tiers) == ["free", "plus", "pro", "admin"]  # ordered by rank
    weights = [t.weight for t in tiers.values()]
    assert weights == sorted(weights) and weights[-1] >= 10  # admin weighs most
    assert [t.max_steps for t in tiers.values()][:3] == [64, 128, 256]
    assert all(t.name == name for name, t in tiers.items())


PRICE = {"amount": 4.9, "currency": "EUR", "period": "month", "price_id": "price_1"}


def test_tiers_price_parses_exactly() -> None:
    tiers = parse_tiers(config(free=good(), plus=good(1, price=PRICE)))
    price = tiers["plus"].price
    assert price is not None and str(price.amount) == "4.90" and price.price_id == "price_1"
    assert tiers["free"].price is None


def test_tiers_shipped_paid_tiers_have_prices() -> None:
    with SHIPPED.open("rb") as fh:
        tiers = parse_tiers(tomllib.load(fh))
    assert [name for name, t in tiers.items() if t.price is not None] == ["plus", "pro"]


def test_tiers_aging_default_applies() -> None:
    table = good()
    del table["aging_s"]
    assert parse_tiers(config(free=table))["free"].aging_s == 600.0


def test_tiers_integer_weight_accepted() -> None:
    assert parse_tiers(config(free=good(weight=2)))["free"].weight == 2.0


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"tiers": {}}, "at least one"),
        ({"tier": {}}, "unknown top-level keys ['tier']"),
        (config(plus=good()), "'free' tier is required"),
        (config(free=good(colour="red")), "unknown keys ['colour']"),
        (
            config(free={k: v for k, v in good().items() if k != "weight"}),
            "missing keys ['weight']",
        ),
        (config(free=good(weight=-1.0)), "weight must be a positive"),
        (config(free=good(weight=0)), "weight must be a positive"),
        (config(free=good(weight=float("inf"))), "weight must be a positive"),
        (config(free=good(weight="1")), "weight must be a number"),
        (config(free=good(max_concurrent=0)), "max_concurrent must be >= 1"),
        (config(free=good(daily_quota=-5)), "daily_quota must be >= 0"),
        (config(free=good(max_steps=64.0)), "max_steps must be an integer"),
        (config(free=good(max_queued=True)), "max_queued must be an integer"),
        (config(free=good(aging_s=0)), "aging_s must be a positive"),
        (config(free="fast"), "expected a table"),
        (config(free=good(), plus=good()), "share rank 0"),
        ({"tiers": {"free": good(), "bad name": good(1)}}, "simple identifier"),
        (config(free=good(price=PRICE)), "'free' tier cannot have a price"),
        (config(free=good(), plus=good(1, price="5")), "price must be a table"),
        (config(free=good(), plus=good(1, price={**PRICE, "amount": 0})), "must be positive"),
        (config(free=good(), plus=good(1, price={**PRICE, "amount": "x"})), "must be a number"),
        (config(free=good(), plus=good(1, price={**PRICE, "currency": "eur"})), "a code like"),
        (config(free=good(), plus=good(1, price={**PRICE, "period": "week"})), "period must"),
        (config(free=good(), plus=good(1, price={**PRICE, "vat": 1})), "unknown price keys"),
    ],
)
def test_tiers_bad_config_raises_clear_error(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_tiers(cfg)


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_steps", MAX_STEPS + 1), ("max_guidance", MAX_GUIDANCE + 0.5), ("max_variants", 17)],
)
def test_tiers_above_the_generation_limits_are_refused(key: str, value: float) -> None:
    assert MAX_VARIANTS == 16
    with pytest.raises(LimitError, match=rf"tier 'pro': {key} = .* more than agents can run"):
        parse_tiers(config(free=good(), pro=good(1, **{key: value})))


def test_tiers_at_the_generation_limits_are_allowed() -> None:
    table = good(max_steps=MAX_STEPS, max_guidance=MAX_GUIDANCE, max_variants=MAX_VARIANTS)
    assert parse_tiers(config(free=table))["free"].max_steps == MAX_STEPS


def test_tiers_error_names_the_tier() -> None:
    with pytest.raises(ValueError, match="tier 'plus'"):
        parse_tiers(config(free=good(), plus=good(1, weight=-3)))
