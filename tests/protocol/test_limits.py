"""protocol.limits: one set of generation limits, enforced by the wire messages themselves."""

from __future__ import annotations

import pytest

from protocol import Assign, JobSpec, MeshOptions, ProtocolError, decode_from_coordinator, encode
from protocol.limits import (
    FACE_TOLERANCE,
    MAX_GUIDANCE,
    MAX_PRINT_FACES,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    MAX_TARGET_FACES,
    MAX_VARIANTS,
    MIN_TARGET_FACES,
    LimitError,
    check_tier_limits,
    face_budget,
    over_budget,
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


# mesh options


@pytest.mark.parametrize(
    ("target", "printable", "budget"),
    [
        (None, False, None),
        (5_000, False, 5_000),
        (None, True, MAX_PRINT_FACES),
        (5_000, True, 5_000),
        (MAX_TARGET_FACES, True, MAX_PRINT_FACES),
        (MAX_TARGET_FACES, False, MAX_TARGET_FACES),
    ],
)
def test_limits_face_budget(target: int | None, printable: bool, budget: int | None) -> None:
    assert face_budget(target, printable) == budget


def test_limits_over_budget_allows_the_tolerance() -> None:
    assert not over_budget(10_000, None)
    assert not over_budget(1_000, 1_000)
    assert not over_budget(int(1_000 * (1 + FACE_TOLERANCE)), 1_000)
    assert over_budget(int(1_000 * (1 + FACE_TOLERANCE)) + 1, 1_000)


@pytest.mark.parametrize("faces", [MIN_TARGET_FACES - 1, MAX_TARGET_FACES + 1, 0, -5])
def test_limits_mesh_target_out_of_range_is_refused_on_the_wire(faces: int) -> None:
    wire = assign().replace('"steps":64', f'"steps":64,"mesh":{{"target_faces":{faces}}}')
    with pytest.raises(ProtocolError, match="target_faces"):
        decode_from_coordinator(wire)


def test_limits_mesh_options_in_range_pass_the_wire() -> None:
    wire = assign(mesh=MeshOptions(target_faces=MIN_TARGET_FACES, printable=True))
    decoded = decode_from_coordinator(wire)
    assert isinstance(decoded, Assign)
    assert decoded.jobs[0].mesh == MeshOptions(MIN_TARGET_FACES, True)


def test_limits_mesh_options_refuse_unknown_fields() -> None:
    wire = assign().replace('"steps":64', '"steps":64,"mesh":{"faces":1000}')
    with pytest.raises(ProtocolError):
        decode_from_coordinator(wire)
