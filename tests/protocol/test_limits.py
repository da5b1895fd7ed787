"""protocol.limits: one set of generation limits, enforced by the wire messages themselves."""

from __future__ import annotations

import pytest

from protocol import Assign, JobSpec, ProtocolError, decode_from_coordinator, encode
from protocol.limits import (
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    MAX_VARIANTS,
    LimitError,
    check_tier_limits,
)


def assign(**changes: object) -> str:
    spec = {"job": "j", "attempt": 1, "prompt": "a chair", "seed": 0, "guidance": 15.0, "steps": 64}
    return encode(Assign(jobs=(JobSpec(**{**spec, **changes}),)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "at_limit", "over"),
    [
        ("prompt", "p" * MAX_PROMPT_CHARS, "p" * (MAX_PROMPT_CHARS + 1)),
        ("steps", MAX_STEPS, MAX_STEPS + 1),
        ("guidance", MAX_GUIDANCE, MAX_GUIDANCE + 0.5),
    ],
)
def test_limits_bound_the_assign_message(field: str, at_limit: object, over: object) -> None:
    assert isinstance(decode_from_coordinator(assign(**{field: at_limit})), Assign)
    with pytest.raises(ProtocolError, match=field):
        decode_from_coordinator(assign(**{field: over}))


def test_limits_tier_within_passes() -> None:
    check_tier_limits(
        "tier 'x'", max_steps=MAX_STEPS, max_guidance=MAX_GUIDANCE, max_variants=MAX_VARIANTS
    )


def test_limits_tier_above_names_tier_key_and_limit() -> None:
    with pytest.raises(LimitError) as info:
        check_tier_limits("tier 'x'", max_steps=64, max_guidance=80.0, max_variants=1)
    message = str(info.value)
    assert message.startswith("tier 'x': max_guidance = 80 is more than agents can run")
    assert f"limit is {MAX_GUIDANCE:g}" in message
    assert info.value.key == "max_guidance" and isinstance(info.value, ValueError)
