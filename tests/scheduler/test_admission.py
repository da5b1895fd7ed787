"""check_submit(): every limit, each refusal readable."""

from __future__ import annotations

import pytest

from scheduler import check_submit
from tests.support.scheduling import make_tiers

FREE = make_tiers(daily_quota=10, max_queued=3, max_steps=64, max_variants=2, max_guidance=15.0)[
    "free"
]


def test_admission_within_limits_is_allowed() -> None:
    assert check_submit(FREE, used_today=8, queued=1, steps=64, guidance=15.0, variants=2) is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"variants": 3}, "at most 2 variants"),
        ({"variants": 0}, "at least one variant"),
        ({"steps": 65}, "at most 64 steps (asked 65)"),
        ({"steps": 0}, "Steps must be at least 1"),
        ({"guidance": 15.5}, "guidance up to 15 (asked 15.5)"),
        ({"guidance": -1.0}, "non-negative"),
        ({"guidance": float("nan")}, "non-negative"),
        ({"used_today": 9, "variants": 2}, "Daily quota reached"),
        ({"used_today": 10, "variants": 1}, "0 left today"),
        ({"queued": 2, "variants": 2}, "Too many jobs waiting"),
    ],
)
def test_admission_refusal_names_the_limit(kwargs: dict[str, float], fragment: str) -> None:
    args: dict[str, float] = {
        "used_today": 0,
        "queued": 0,
        "steps": 32,
        "guidance": 3.0,
        "variants": 1,
    }
    args.update(kwargs)
    refusal = check_submit(FREE, **args)  # type: ignore[arg-type]
    assert refusal is not None and fragment in refusal
    assert "free tier" in refusal or "at least" in refusal or "non-negative" in refusal
