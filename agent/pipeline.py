"""Loading Shap-E and running its denoising loop with per-step control.

``ShapEPipeline.__call__`` offers no step callback, so ``sample_latents``
mirrors its loop with the pipeline's own components (same prompt encoding,
latent preparation, scheduler and prior calls); a test checks it returns
exactly what ``__call__(output_type="latent")`` returns. Owning the loop gives
per-step progress, cancellation between model calls and one RNG per sample.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from agent.generation import DeviceInfo
from agent.models import RANDOM_MODELS, model_kind

if TYPE_CHECKING:
    # The defining module, not ``diffusers``' lazy top level: type checkers resolve that
    # to a placeholder (diffusers' dummy objects) that has none of the pipeline's methods.
    from diffusers.pipelines.shap_e.pipeline_shap_e import ShapEPipeline
    from diffusers.pipelines.shap_e.pipeline_shap_e_img2img import ShapEImg2ImgPipeline
    from PIL.Image import Image

    AnyPipeline = ShapEPipeline | ShapEImg2ImgPipeline

WEIGHTS_HINT = (
    "Download the weights with `hf download openai/shap-e --local-dir "
    "/path/to/shap-e` (openai/shap-e-img2img for the image model) and pass that "
    "directory as --model, or run once with network access so the hub cache is filled; "
    "--model tiny (or tiny-img2img) runs a random tiny model for testing."
)


class ModelLoadError(Exception):
    """The model could not be loaded; the message says how to get the weights."""


class GenerationError(Exception):
    """Generation failed for a reason that retrying the same request will not fix."""


class GenerationOutOfMemoryError(GenerationError):
    """CUDA ran out of memory; the runner retries the jobs in smaller batches."""


class GenerationCancelled(Exception):
    """``should_stop()`` asked for the work to stop."""


@contextlib.contextmanager
def quiet_scheduler_warnings() -> Iterator[None]:
    """Silence one known DeprecationWarning from HeunDiscreteScheduler.set_timesteps.

    diffusers 0.42 calls ``np.array(tensor)`` there and torch 2.13's
    ``Tensor.__array__`` lacks numpy 2's ``copy`` keyword, so numpy warns on
    every call. It is harmless, but fatal under ``-W error``. The filter is
    scoped to that message and to this block only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"__array__ implementation doesn't accept a copy keyword",
            category=DeprecationWarning,
        )
        yield


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {spec!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type != "cpu":
        raise ModelLoadError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


def describe_device(device: torch.device, dtype: torch.dtype) -> DeviceInfo:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo(f"cuda:{index}", props.name, props.total_memory // 2**20, str(dtype)[6:])
    return DeviceInfo("cpu", "", 0, str(dtype)[6:])


def _looks_like_path(model: str) -> bool:
    # Hub ids are "owner/name"; anything else with a separator is a directory.
    return (
        model.startswith((".", "/", "~"))
        or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
        or Path(model).exists()
    )


def load_pipeline(
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    offline: bool = False,
    cache_dir: str | None = None,
) -> AnyPipeline:
    """Load ``model`` (hub id, local directory, or a random one of
    :data:`agent.models.RANDOM_MODELS`) onto ``device``; text or image by its kind."""
    pipe: AnyPipeline
    if model in RANDOM_MODELS:
        from agent.tiny import build_random_image_pipeline, build_random_pipeline

        size, kind = RANDOM_MODELS[model]
        pipe = build_random_image_pipeline(size) if kind == "image" else build_random_pipeline(size)
    else:
        pipe = _load_pretrained(model, dtype, offline=offline, cache_dir=cache_dir)
    try:
        # Random pipelines are built in float32; pretrained ones already arrive in
        # ``dtype``. Casting only when needed avoids diffusers' cast notice.
        if pipe.dtype != dtype:
            pipe = pipe.to(dtype=dtype)
        return pipe.to(device=device)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        raise ModelLoadError(f"could not move {model!r} to {device}: {exc}") from exc


def _load_pretrained(
    model: str, dtype: torch.dtype, *, offline: bool, cache_dir: str | None
) -> AnyPipeline:
    from diffusers.pipelines.shap_e.pipeline_shap_e import ShapEPipeline
    from diffusers.pipelines.shap_e.pipeline_shap_e_img2img import ShapEImg2ImgPipeline

    from agent.tiny import fill_mc_tables

    kind = model_kind(model)
    loader = ShapEImg2ImgPipeline if kind == "image" else ShapEPipeline

    if _looks_like_path(model):
        path = Path(model).expanduser()
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"model directory {str(path)!r} does not exist or has no model_index.json. "
                + WEIGHTS_HINT
            )
        model = str(path)
    try:
        with quiet_scheduler_warnings():
            pipe = loader.from_pretrained(
                model, dtype=dtype, local_files_only=offline, cache_dir=cache_dir
            )
    except (OSError, ValueError, ImportError) as exc:
        mode = "offline, from the local cache only" if offline else "from the hub or cache"
        raise ModelLoadError(f"could not load {model!r} ({mode}): {exc}. " + WEIGHTS_HINT) from exc
    # Converted checkpoints that lost the marching-cubes buffers would decode to
    # nothing; our derived tables are equivalent.
    if not bool(pipe.shap_e_renderer.mesh_decoder.masks.any()):
        fill_mc_tables(pipe.shap_e_renderer)
    cast("ShapEPipeline", pipe).set_progress_bar_config(disable=True)
    return pipe


StepHook = Callable[[int, int], None]


def encode_images(
    pipe: ShapEImg2ImgPipeline, images: Sequence[Image], device: torch.device, guided: bool
) -> torch.Tensor:
    """The image encoder's patch embeddings of each image (zeros first when guided).

    The pipeline's own ``_encode_image`` keeps only the first of a list of PIL
    images, so the processor runs here on all of them and hands it the tensor.
    """
    pixels = pipe.image_processor(list(images), return_tensors="pt").pixel_values
    embeds: torch.Tensor = pipe._encode_image(pixels, device, 1, guided)
    return embeds


@torch.inference_mode()
def sample_latents(
    pipe: AnyPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance_scale: float,
    steps: int,
    after_call: StepHook,
    images: Sequence[Image] | None = None,
) -> torch.Tensor:
    """Denoise one latent per prompt (per image, for the image pipeline);
    ``after_call(done, total)`` runs after each model call.

    ``total`` counts model calls (Heun makes 2N-1 for N steps). ``after_call`` may
    raise to abandon the loop before the next call. The loop is the same for both
    pipelines: only the conditioning (prompt or image embeddings) differs.
    """
    device = pipe._execution_device
    guided = guidance_scale > 1.0
    if images is not None:
        if not hasattr(pipe, "image_encoder"):
            raise GenerationError("this agent's model is text-to-3D; it cannot take an image")
        embeds = encode_images(cast("ShapEImg2ImgPipeline", pipe), images, device, guided)
        prompts = [""] * len(images)
    else:
        if not hasattr(pipe, "text_encoder"):
            raise GenerationError("this agent's model is image-to-3D; it needs an image")
        embeds = cast("ShapEPipeline", pipe)._encode_prompt(list(prompts), device, 1, guided)
    with quiet_scheduler_warnings():
        pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = pipe.scheduler.timesteps
    n_emb, emb_dim = pipe.prior.config.num_embeddings, pipe.prior.config.embedding_dim
    # One CPU generator per sample: a request's initial noise depends only on its
    # own seed, whatever else shares the batch and whatever the device.
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    # Both pipelines share the loop's parts (prior, scheduler, prepare_latents).
    latents: torch.Tensor = cast("ShapEPipeline", pipe).prepare_latents(
        (len(prompts), n_emb * emb_dim), embeds.dtype, device, generators, None, pipe.scheduler
    )
    latents = latents.reshape(latents.shape[0], n_emb, emb_dim)
    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        scaled = pipe.scheduler.scale_model_input(model_input, t)
        pred = pipe.prior(scaled, timestep=t, proj_embedding=embeds).predicted_image_embedding
        pred, _ = pred.split(scaled.shape[2], dim=2)  # drop the predicted variance
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        latents = pipe.scheduler.step(pred, timestep=t, sample=latents).prev_sample
        after_call(i + 1, len(timesteps))
    return latents
