"""Image-to-3D on the agent: the tiny ShapEImg2ImgPipeline, our loop, the generator."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import PriorTransformer, ShapEImg2ImgPipeline
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

from agent.generator import (
    GenerationRequest,
    Generator,
    GeneratorConfig,
    ProgressEvent,
    validate_request,
)
from agent.models import advertised_models, is_random, model_kind
from agent.pipeline import load_pipeline, quiet_scheduler_warnings, sample_latents
from agent.tiny import FULL_IMAGE_PRIOR, FULL_VISION, build_random_image_pipeline
from protocol import IMAGE_MODEL, TEXT_MODEL

IMAGE_CONFIG = GeneratorConfig(
    model="tiny-img2img", device="cpu", offline=True, max_batch=4, frame_size=24, preview_size=64
)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    image.save(out, format="PNG")
    return out.getvalue()


RED, BLUE = png((200, 30, 30)), png((30, 30, 200))


@pytest.fixture(scope="module")
def generator() -> Generator:
    gen = Generator(IMAGE_CONFIG)
    gen.load()
    return gen


@pytest.fixture(scope="module")
def pipe(generator: Generator) -> ShapEImg2ImgPipeline:
    return generator._pipe  # type: ignore[return-value]


def ignore_step(done: int, total: int) -> None:
    pass


def request(job: str, image: bytes | None = RED, **changes: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "job_id": job,
        "prompt": "",
        "seed": 7,
        "guidance_scale": 3.0,
        "steps": 3,
        "image": image,
    }
    fields.update(changes)
    return GenerationRequest(**fields)


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_image_sample_latents_matches_diffusers_call(
    pipe: ShapEImg2ImgPipeline, guidance: float
) -> None:
    # Our loop must stay a faithful copy of ShapEImg2ImgPipeline.__call__ (one image:
    # diffusers' own call keeps only the first of a list of PIL images).
    image = Image.open(io.BytesIO(RED)).convert("RGB")
    ours = sample_latents(pipe, [""], [5], guidance, 4, ignore_step, [image])
    with quiet_scheduler_warnings():
        theirs = pipe(
            image,
            num_inference_steps=4,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(5),
            output_type="latent",
        ).images
    torch.testing.assert_close(ours, theirs)


def test_image_sample_latents_batch_keeps_every_image(pipe: ShapEImg2ImgPipeline) -> None:
    red, blue = (Image.open(io.BytesIO(d)).convert("RGB") for d in (RED, BLUE))
    alone = sample_latents(pipe, [""], [9], 3.0, 3, ignore_step, [blue])
    batched = sample_latents(pipe, ["", ""], [9, 9], 3.0, 3, ignore_step, [red, blue])
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])  # the image matters


def test_image_generator_makes_valid_glbs(
    generator: Generator, validate_glb: Callable[[bytes], dict[str, Any]]
) -> None:
    events: list[ProgressEvent] = []
    results = generator.generate(
        [request("a"), request("b", image=BLUE, prompt="a blue box")], events.append, lambda: False
    )
    assert [r.job_id for r in results] == ["a", "b"]
    for result in results:
        assert result.glb[:4] == b"glTF" and result.faces > 0
        assert result.preview_png is not None and result.preview_png[:4] == b"\x89PNG"
        assert validate_glb(result.glb)["issues"]["numErrors"] == 0
    assert {e.stage for e in events} >= {"sampling", "decoding", "exporting"}


def test_image_generator_is_deterministic_per_image_and_seed(generator: Generator) -> None:
    first = generator.generate([request("a")], lambda e: None, lambda: False)[0]
    again = generator.generate([request("a")], lambda e: None, lambda: False)[0]
    other = generator.generate([request("a", image=BLUE)], lambda e: None, lambda: False)[0]
    assert first.glb == again.glb and first.glb != other.glb


def test_image_generator_refuses_text_jobs_and_text_generator_refuses_images(
    generator: Generator, tiny_generator: Generator
) -> None:
    with pytest.raises(ValueError, match="text job, but this agent runs a image"):
        generator.batch_key(request("t", image=None, prompt="a chair"))
    with pytest.raises(ValueError, match="image job, but this agent runs a text"):
        tiny_generator.batch_key(request("i"))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not a png", "does not decode"),
        (RED[: len(RED) // 2], "does not decode"),
        (png((1, 2, 3), size=(5000, 8)), "over 4096"),
    ],
)
def test_image_generator_fails_an_undecodable_image(
    generator: Generator, data: bytes, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        generator.generate([request("bad", image=data)], lambda e: None, lambda: False)


def test_image_request_validation() -> None:
    validate_request(request("ok"))  # an image job needs no prompt
    with pytest.raises(ValueError, match="bytes"):
        validate_request(request("empty", image=b""))
    with pytest.raises(ValueError, match="prompt must be non-empty"):
        validate_request(request("text", image=None))


def test_image_models_are_named_and_advertised(tmp_path: Path) -> None:
    assert model_kind("tiny-img2img") == model_kind("openai/shap-e-img2img") == "image"
    assert model_kind("tiny") == model_kind("openai/shap-e") == "text"
    assert advertised_models("tiny-img2img") == (IMAGE_MODEL,)
    assert advertised_models("random-full") == (TEXT_MODEL,)
    assert advertised_models("instant:kind=image,delay=1") == (IMAGE_MODEL,)
    assert is_random("tiny-img2img") and not is_random("openai/shap-e-img2img")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "ShapEImg2ImgPipeline"}))
    assert model_kind(str(tmp_path)) == "image"


def test_image_saved_tiny_directory_loads_as_image_pipeline(
    tmp_path: Path, pipe: ShapEImg2ImgPipeline
) -> None:
    pipe.save_pretrained(tmp_path / "tiny-img")
    loaded = load_pipeline(
        str(tmp_path / "tiny-img"), torch.device("cpu"), torch.float32, offline=True
    )
    assert isinstance(loaded, ShapEImg2ImgPipeline)
    image = [Image.open(io.BytesIO(RED)).convert("RGB")]
    a = sample_latents(pipe, [""], [1], 2.0, 2, ignore_step, image)
    b = sample_latents(loaded, [""], [1], 2.0, 2, ignore_step, image)
    torch.testing.assert_close(a, b)


def test_image_random_pipeline_is_deterministic() -> None:
    a, b = build_random_image_pipeline(seed=3), build_random_image_pipeline(seed=3)
    for (name, x), (_, y) in zip(
        a.prior.state_dict().items(), b.prior.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


def test_image_random_full_configs_have_shap_e_img2img_shapes() -> None:
    with torch.device("meta"):
        prior = PriorTransformer(**FULL_IMAGE_PRIOR)
        vision = CLIPVisionModel(CLIPVisionConfig(**FULL_VISION))
    assert prior.config.embedding_proj_dim == vision.config.hidden_size == 1024
    assert (vision.config.image_size // vision.config.patch_size) ** 2 == 256  # patch tokens
    assert 250e6 < sum(p.numel() for p in vision.parameters()) < 350e6  # CLIP ViT-L/14 vision
