from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import PriorTransformer, ShapEPipeline
from diffusers.pipelines.shap_e.renderer import ShapERenderer
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from agent.generator import Generator
from agent.pipeline import (
    ModelLoadError,
    load_pipeline,
    quiet_scheduler_warnings,
    resolve_device,
    sample_latents,
)
from agent.tiny import FULL_PRIOR, FULL_TEXT, build_random_pipeline, build_tokenizer


@pytest.fixture(scope="module")
def pipe(tiny_generator: Generator) -> ShapEPipeline:
    return tiny_generator._pipe  # type: ignore[return-value]


def ignore_step(done: int, total: int) -> None:
    pass


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_sample_latents_matches_diffusers_call(pipe: ShapEPipeline, guidance: float) -> None:
    # Our loop must stay a faithful copy of ShapEPipeline.__call__.
    prompts, seeds = ["a chair", "a lamp"], [5, 6]
    ours = sample_latents(pipe, prompts, seeds, guidance, 5, ignore_step)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with quiet_scheduler_warnings():
        theirs = pipe(
            prompts,
            num_inference_steps=5,
            guidance_scale=guidance,
            generator=generators,
            output_type="latent",
        ).images
    torch.testing.assert_close(ours, theirs)


def test_sample_latents_calls_heun_2n_minus_1_times(pipe: ShapEPipeline) -> None:
    calls: list[tuple[int, int]] = []
    sample_latents(pipe, ["x"], [1], 3.0, 4, lambda done, total: calls.append((done, total)))
    assert calls == [(i, 7) for i in range(1, 8)]


def test_sample_latents_seed_does_not_depend_on_batch(pipe: ShapEPipeline) -> None:
    alone = sample_latents(pipe, ["a chair"], [42], 3.0, 4, ignore_step)
    batched = sample_latents(pipe, ["a dog", "a chair", "a car"], [1, 42, 2], 3.0, 4, ignore_step)
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=1e-4)


def test_random_pipeline_is_deterministic_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = build_random_pipeline("tiny", seed=3)
    b = build_random_pipeline("tiny", seed=3)
    c = build_random_pipeline("tiny", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb in zip(a.prior.named_parameters(), b.prior.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert not all(
        torch.equal(pa, pc)
        for pa, pc in zip(a.prior.parameters(), c.prior.parameters(), strict=True)
    )


def test_random_pipeline_has_marching_cubes_tables() -> None:
    renderer = build_random_pipeline("tiny").shap_e_renderer
    assert renderer.mesh_decoder.masks.any()
    assert renderer.mesh_decoder.masks.sum() > 256


def test_random_full_configs_have_shap_e_shapes() -> None:
    # Built on the meta device: shapes only, no memory, no time.
    with torch.device("meta"):
        prior = PriorTransformer(**FULL_PRIOR)
        text = CLIPTextModelWithProjection(CLIPTextConfig(**FULL_TEXT))
        renderer = ShapERenderer()
    assert prior.config.num_embeddings * prior.config.embedding_dim == 1024 * 1024
    assert prior.config.embedding_proj_dim == text.config.projection_dim == 768
    assert 250e6 < sum(p.numel() for p in prior.parameters()) < 400e6
    assert 100e6 < sum(p.numel() for p in text.parameters()) < 150e6  # CLIP ViT-L/14 text
    assert renderer.config.d_latent == prior.config.embedding_dim
    rows = sum(shape[0] for shape in renderer.config.param_shapes)
    assert rows == prior.config.num_embeddings


def test_tokenizer_is_offline_and_clip_like() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer("A red chair!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert ids[0] == tokenizer.bos_token_id == 512
    assert tokenizer.eos_token_id == 513 and 513 in ids
    assert max(ids) < 514


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist or has no model_index\.json"):
        load_pipeline(str(tmp_path / "missing"), torch.device("cpu"), torch.float32)


def test_load_directory_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="hf download"):
        load_pipeline(str(tmp_path), torch.device("cpu"), torch.float32)


def test_load_offline_hub_id_not_in_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="offline") as info:
        load_pipeline(
            "openai/shap-e",
            torch.device("cpu"),
            torch.float32,
            offline=True,
            cache_dir=str(tmp_path),
        )
    assert "hf download openai/shap-e" in str(info.value)


def test_load_saved_tiny_directory_round_trips(tmp_path: Path, pipe: ShapEPipeline) -> None:
    pipe.save_pretrained(tmp_path / "tiny")
    loaded = load_pipeline(str(tmp_path / "tiny"), torch.device("cpu"), torch.float32, offline=True)
    assert loaded.shap_e_renderer.mesh_decoder.masks.any()
    a = sample_latents(pipe, ["x"], [1], 2.0, 2, ignore_step)
    b = sample_latents(loaded, ["x"], [1], 2.0, 2, ignore_step)
    torch.testing.assert_close(a, b)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ModelLoadError, match=r"unsupported device|unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            resolve_device("cuda:0")
