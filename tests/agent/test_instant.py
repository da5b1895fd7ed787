"""The instant test generator: valid deterministic GLBs, progress, cancellation, CLI wiring."""

from __future__ import annotations

import threading

import pytest

from agent.generation import MAX_STEPS, GenerationRequest
from agent.instant import (
    InstantCancelledError,
    InstantGenerator,
    InstantOptions,
    parse_options,
    sized_glb,
    tetrahedron_glb,
)
from agent.settings import AgentSettings, Secret
from coordinator.meshes.convert import inspect_glb
from protocol import MeshOptions


def _request(job: str = "j1", seed: int = 7, steps: int = 4) -> GenerationRequest:
    return GenerationRequest(job, "a cube", seed, 15.0, steps)


def test_instant_glb_passes_the_coordinators_checks_and_is_deterministic() -> None:
    info = inspect_glb(tetrahedron_glb(7), 1 << 20)
    assert (info.vertices, info.faces) == (4, 4)
    assert tetrahedron_glb(7) == tetrahedron_glb(7)
    assert tetrahedron_glb(7) != tetrahedron_glb(8)


@pytest.mark.parametrize("size", [2048, 10240, 1 << 20])
def test_instant_sized_glb_has_that_many_bytes_and_passes_the_checks(size: int) -> None:
    glb = sized_glb(size)
    assert len(glb) == size
    info = inspect_glb(glb, 1 << 24)
    assert info.has_colors and info.faces > info.vertices > 0
    assert (
        InstantGenerator(InstantOptions(size=size))
        .generate([_request()], lambda _: None, lambda: False)[0]
        .glb
        == glb
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("instant", InstantOptions(0.0, None)),
        ("instant:delay=0.25", InstantOptions(0.25, None)),
        ("instant:delay=1,steps=8", InstantOptions(1.0, 8)),
        ("instant:size=1048576", InstantOptions(0.0, None, 1048576)),
    ],
)
def test_instant_options_parse_from_the_model_name(name: str, expected: InstantOptions) -> None:
    assert parse_options(name) == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("instant:speed=3", "use delay=SECONDS, steps=N, size=BYTES, sphere=FACES or kind="),
        ("instant:size=1000", "size must be a multiple of 4 in 2048"),
        ("instant:size=4098", "size must be a multiple of 4"),
        ("instant:size=big", "sphere integers"),
        ("instant:delay=soon", "delay is a number"),
        ("instant:steps=0", f"steps must be in 1..{MAX_STEPS}"),
        ("instant:delay=-1", "delay must be in"),
        ("tiny", "not an instant model"),
    ],
)
def test_instant_options_refuse_bad_values_clearly(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(name)


def test_instant_generate_reports_every_step_then_returns_results() -> None:
    events: list[tuple[int, int]] = []
    results = InstantGenerator(InstantOptions(steps=3)).generate(
        [_request("a", 1), _request("b", 2)], lambda e: events.append((e.step, e.total)), bool
    )
    assert events == [(1, 3), (2, 3), (3, 3)]
    assert [r.job_id for r in results] == ["a", "b"]
    assert results[0].glb == tetrahedron_glb(1)


def test_instant_generate_stops_when_asked_during_a_delay() -> None:
    stop = threading.Event()
    generator = InstantGenerator(InstantOptions(delay_s=60.0, steps=2))
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(InstantCancelledError):
        generator.generate([_request()], lambda e: None, stop.is_set)


def test_instant_cli_factory_builds_the_generator_from_settings() -> None:
    from agent import instant

    settings = AgentSettings(
        url="ws://127.0.0.1:9/agent/ws", token=Secret("t"), model="instant:delay=0.5"
    )
    generator = instant.load(settings)
    assert generator.options == InstantOptions(0.5, None)
    assert generator.device_info.vram_mb == 0


def test_instant_sphere_honours_the_jobs_mesh_options() -> None:

    generator = InstantGenerator(parse_options("instant:sphere=20000"))
    plain, small = generator.generate(
        [
            GenerationRequest("plain", "a ball", 1, 15.0, 2),
            GenerationRequest("small", "a ball", 1, 15.0, 2, mesh=MeshOptions(target_faces=1_000)),
        ],
        lambda _: None,
        lambda: False,
    )
    assert 18_000 <= plain.faces <= 22_000
    assert 900 <= small.faces <= 1_050
    assert len(small.glb) < len(plain.glb) / 10
