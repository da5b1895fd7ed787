from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pygltflib
import pytest
import torch
import trimesh

from agent.generation import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_STEPS
from agent.generator import (
    GenerationCancelled,
    GenerationRequest,
    Generator,
    GeneratorConfig,
    ModelLoadError,
    ProgressEvent,
)

STAGES = ["sampling", "decoding", "exporting"]


def request(
    job_id: str = "j1", prompt: str = "a red chair", seed: int = 7, **kw: Any
) -> GenerationRequest:
    fields: dict[str, Any] = {"guidance_scale": 3.0, "steps": 6, **kw}
    return GenerationRequest(job_id=job_id, prompt=prompt, seed=seed, **fields)


def never() -> bool:
    return False


@pytest.fixture
def prior_calls(tiny_generator: Generator, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts calls into the prior (the model the denoising loop runs)."""
    prior = tiny_generator._pipe.prior  # type: ignore[union-attr]
    original = prior.forward
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(prior, "forward", counting)
    yield calls


def test_generate_returns_valid_glb(
    tiny_generator: Generator, validate_glb: Callable[[bytes], dict[str, Any]]
) -> None:
    (result,) = tiny_generator.generate([request()], lambda e: None, never)
    assert result.job_id == "j1" and result.vertices > 0 and result.faces > 0
    report = validate_glb(result.glb)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    gltf = pygltflib.GLTF2.load_from_bytes(result.glb)
    assert gltf.meshes[0].primitives[0].attributes.COLOR_0 is not None
    scene = trimesh.load(io.BytesIO(result.glb), file_type="glb", skip_materials=True)
    mesh = scene.to_geometry()
    assert (len(mesh.vertices), len(mesh.faces)) == (result.vertices, result.faces)
    assert mesh.visual.kind == "vertex"
    assert result.preview_png is not None and result.preview_png.startswith(b"\x89PNG")
    assert result.seconds > 0


def test_generate_reports_each_step_in_stage_order(tiny_generator: Generator) -> None:
    events: list[ProgressEvent] = []
    reqs = [request("a"), request("b", seed=8)]
    tiny_generator.generate(reqs, events.append, never)
    assert all(e.job_ids == ("a", "b") for e in events)
    stages = [e.stage for e in events]
    assert stages == sorted(stages, key=STAGES.index)  # stages in order, each once
    assert set(stages) == set(STAGES)
    sampling = [e for e in events if e.stage == "sampling"]
    assert [e.step for e in sampling] == list(range(7))  # 0, then every one of 6 steps
    assert all(e.total == 6 for e in sampling)
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in sampling[1:])
    for stage in ("decoding", "exporting"):
        steps = [e.step for e in events if e.stage == stage]
        assert steps == sorted(steps) and steps[-1] == 2


def test_generate_progress_runs_in_the_calling_thread(tiny_generator: Generator) -> None:
    threads: set[int] = set()
    worker = threading.Thread(
        target=tiny_generator.generate,
        args=([request()], lambda e: threads.add(threading.get_ident()), never),
    )
    worker.start()
    worker.join(timeout=60)
    assert threads == {worker.ident}


@pytest.mark.parametrize("stop_at", [1, 3])
def test_generate_cancels_at_the_next_step(
    tiny_generator: Generator, prior_calls: list[int], stop_at: int
) -> None:
    events: list[ProgressEvent] = []
    stop = threading.Event()

    def on_progress(event: ProgressEvent) -> None:
        events.append(event)
        if event.stage == "sampling" and event.step == stop_at:
            stop.set()

    with pytest.raises(GenerationCancelled):
        tiny_generator.generate([request(steps=6)], on_progress, stop.is_set)
    # Heun finishes step k on model call 2k; nothing runs after the stop.
    assert len(prior_calls) == 2 * stop_at
    assert events[-1] == replace(events[-1], stage="sampling", step=stop_at)


def test_generate_cancelled_before_start_runs_nothing(
    tiny_generator: Generator, prior_calls: list[int]
) -> None:
    with pytest.raises(GenerationCancelled):
        tiny_generator.generate([request()], lambda e: None, lambda: True)
    assert prior_calls == []


def test_generate_cancels_between_decodes(tiny_generator: Generator) -> None:
    events: list[ProgressEvent] = []
    reqs = [request("a"), request("b", seed=9)]
    with pytest.raises(GenerationCancelled):
        tiny_generator.generate(
            reqs, events.append, lambda: any(e.stage == "decoding" for e in events)
        )
    assert [e.stage for e in events].count("decoding") == 1
    assert "exporting" not in {e.stage for e in events}


def test_generator_works_after_cancel(tiny_generator: Generator) -> None:
    with pytest.raises(GenerationCancelled):
        tiny_generator.generate([request()], lambda e: None, lambda: True)
    first = tiny_generator.generate([request()], lambda e: None, never)
    again = tiny_generator.generate([request()], lambda e: None, never)
    assert first[0].glb == again[0].glb


def test_generate_batch_returns_distinct_results_in_order(tiny_generator: Generator) -> None:
    reqs = [
        request("x", "a red chair", 1),
        request("y", "a blue car", 2),
        request("z", "a green dog", 3),
    ]
    results = tiny_generator.generate(reqs, lambda e: None, never)
    assert [r.job_id for r in results] == ["x", "y", "z"]
    assert len({r.glb for r in results}) == 3


def test_generate_same_seed_gives_same_mesh(tiny_generator: Generator) -> None:
    a = tiny_generator.generate([request(seed=123)], lambda e: None, never)[0]
    b = tiny_generator.generate([request(seed=123)], lambda e: None, never)[0]
    c = tiny_generator.generate([request(seed=124)], lambda e: None, never)[0]
    assert a.glb == b.glb and (a.vertices, a.faces) == (b.vertices, b.faces)
    assert c.glb != a.glb


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": MAX_STEPS + 1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"guidance_scale": -0.1}, "guidance_scale"),
        ({"guidance_scale": MAX_GUIDANCE + 0.5}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"seed": True}, "seed"),
        ({"job_id": ""}, "job_id"),
    ],
)
def test_generate_rejects_out_of_range_requests(
    tiny_generator: Generator, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_generator.generate([replace(request(), **changes)], lambda e: None, never)


def test_generate_accepts_range_limits(tiny_generator: Generator) -> None:
    tiny_generator.validate(
        [
            request(seed=0, steps=1, guidance_scale=0.0, prompt="x"),
            request(
                "b", seed=2**32 - 1, steps=1, guidance_scale=0.0, prompt="y" * MAX_PROMPT_CHARS
            ),
        ]
    )


@pytest.mark.parametrize(
    ("reqs", "message"),
    [
        ([], "no requests"),
        ([request(str(i)) for i in range(5)], "max_batch"),
        ([request("a"), request("b", steps=7)], "share"),
        ([request("a"), request("b", guidance_scale=4.0)], "share"),
        ([request("a"), request("a")], "distinct"),
    ],
)
def test_generate_rejects_bad_batches(
    tiny_generator: Generator, reqs: list[GenerationRequest], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_generator.generate(reqs, lambda e: None, never)


def test_batch_key_groups_by_guidance_and_steps(tiny_generator: Generator) -> None:
    key = tiny_generator.batch_key
    assert key(request("a", "p", 1)) == key(request("b", "q", 2))
    assert key(request(steps=6)) != key(request(steps=7))
    assert key(request(guidance_scale=3)) == key(request(guidance_scale=3.0))


def test_load_is_idempotent_and_reports_loading(tiny_generator: Generator) -> None:
    pipe = tiny_generator._pipe
    events: list[ProgressEvent] = []
    tiny_generator.load(events.append)
    assert tiny_generator._pipe is pipe and events == []
    fresh = Generator(GeneratorConfig(model="tiny", device="cpu"))
    fresh.load(events.append)
    assert [(e.stage, e.step, e.total) for e in events] == [("loading", 0, 1), ("loading", 1, 1)]


def test_device_info_on_cpu(tiny_generator: Generator) -> None:
    info = tiny_generator.device_info
    assert (info.device, info.dtype, info.vram_mb) == ("cpu", "float32", 0)


def test_load_missing_directory_raises_model_load_error(tmp_path: Any) -> None:
    generator = Generator(GeneratorConfig(model=str(tmp_path / "nope"), device="cpu"))
    with pytest.raises(ModelLoadError, match="hf download openai/shap-e"):
        generator.load()


def test_generate_without_preview(tiny_generator: Generator) -> None:
    generator = Generator(replace(tiny_generator.config, preview_size=0))
    generator._pipe = tiny_generator._pipe  # share the loaded tiny model
    (result,) = generator.generate([request()], lambda e: None, never)
    assert result.preview_png is None and result.glb


def test_generate_reports_empty_mesh_clearly(
    tiny_generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.generator import GenerationError

    renderer = tiny_generator._pipe.shap_e_renderer  # type: ignore[union-attr]
    # An SDF that is negative everywhere has no surface to extract.
    monkeypatch.setattr(renderer.mlp, "sdf_activation", lambda x: torch.full_like(x, -1.0))
    with pytest.raises(GenerationError, match="empty mesh"):
        tiny_generator.generate([request()], lambda e: None, never)
