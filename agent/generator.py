"""Text or image -> GLB with Shap-E: validation, batching, progress, cancellation, export.

``Generator.generate`` is synchronous: the agent runs it in a worker thread and
gets progress callbacks from that thread. One generation runs at a time (the
pipeline's scheduler and renderer hold per-call state).
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from agent.export import export_mesh
from agent.generation import (
    DeviceInfo,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressEvent,
    validate_request,
)
from agent.models import Kind, model_kind
from agent.pipeline import (
    GenerationCancelled,
    GenerationError,
    GenerationOutOfMemoryError,
    ModelLoadError,
    describe_device,
    load_pipeline,
    resolve_device,
    sample_latents,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from agent.pipeline import AnyPipeline

__all__ = [
    "DeviceInfo",
    "GenerationCancelled",
    "GenerationError",
    "GenerationOutOfMemoryError",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "GeneratorConfig",
    "ModelLoadError",
    "ProgressEvent",
    "validate_request",
]


def decode_image(data: bytes, job_id: str) -> Image:
    """An image job's input (the coordinator's PNG) as RGB pixels; ValueError if unfit.

    The coordinator re-encoded it at most ``IMAGE_SIDE`` a side; the agent still
    checks the size in its header before decoding any pixel.
    """
    from PIL import Image as PILImage

    from protocol.limits import MAX_IMAGE_SIDE

    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            image = PILImage.open(io.BytesIO(data), formats=["PNG"])
            width, height = image.size
            if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
                raise ValueError(f"{width}x{height} pixels is over {MAX_IMAGE_SIDE} a side")
            image.load()
        except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
            raise ValueError(f"job {job_id}: the input image does not decode: {exc}") from exc
    return image.convert("RGB")


@dataclass(frozen=True)
class GeneratorConfig:
    # hub id, local directory, or a random model: "tiny", "random-full", "tiny-img2img",
    # "random-full-img2img" (agent.models.RANDOM_MODELS)
    model: str = "openai/shap-e"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    offline: bool = False  # never touch the network (HF_HUB_OFFLINE semantics)
    max_batch: int = 4
    frame_size: int = 64  # marching-cubes grid edge for mesh decode
    preview_size: int = 256  # PNG preview edge in px (0 = no preview)
    cache_dir: str | None = None


class Generator:
    def __init__(self, config: GeneratorConfig) -> None:
        if config.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if config.frame_size < 8:
            raise ValueError("frame_size must be at least 8")
        self.config = config
        self.kind: Kind = model_kind(config.model)
        self._pipe: AnyPipeline | None = None
        self._device: torch.device | None = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        # fp16 halves memory and is what Shap-E is usually run in on GPUs; CPUs
        # have no fast fp16 path.
        return torch.float16 if self.device.type == "cuda" else torch.float32

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = resolve_device(self.config.device)
        return self._device

    @property
    def device_info(self) -> DeviceInfo:
        return describe_device(self.device, self.dtype)

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def load(self, progress: Progress | None = None) -> None:
        """Load the model onto the device once; later calls return at once."""
        with self._lock:
            if self._pipe is not None:
                return
            if progress:
                progress(ProgressEvent((), "loading", 0, 1, None))
            self._pipe = load_pipeline(
                self.config.model,
                self.device,
                self.dtype,
                offline=self.config.offline,
                cache_dir=self.config.cache_dir,
            )
            if progress:
                progress(ProgressEvent((), "loading", 1, 1, 0.0))

    # -- generation ----------------------------------------------------------------------------

    def batch_key(self, req: GenerationRequest) -> tuple[float, int, str]:
        """Requests with equal keys may share one batch (guidance, step count, kind).

        ValueError for a request of the other kind: this agent's model cannot run it."""
        if req.kind != self.kind:
            raise ValueError(
                f"job {req.job_id}: a {req.kind} job, but this agent runs a {self.kind}-to-3D model"
            )
        return (float(req.guidance_scale), int(req.steps), req.kind)

    def validate(self, requests: Sequence[GenerationRequest]) -> None:
        if not requests:
            raise ValueError("no requests given")
        if len(requests) > self.config.max_batch:
            raise ValueError(f"batch of {len(requests)} exceeds max_batch {self.config.max_batch}")
        for req in requests:
            validate_request(req)
        if len({self.batch_key(r) for r in requests}) > 1:
            raise ValueError("requests in one batch must share guidance_scale, steps and kind")
        if len({r.job_id for r in requests}) != len(requests):
            raise ValueError("job ids in one batch must be distinct")

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        progress: Progress,
        should_stop: Callable[[], bool],
    ) -> list[GenerationResult]:
        """Run one batch; results in request order. Raises GenerationCancelled on stop."""
        self.validate(requests)
        self.load()
        with self._lock:
            return self._generate(list(requests), progress, should_stop)

    def _generate(
        self,
        requests: list[GenerationRequest],
        progress: Progress,
        should_stop: Callable[[], bool],
    ) -> list[GenerationResult]:
        pipe = self._pipe
        assert pipe is not None  # generate() loads first
        ids = tuple(r.job_id for r in requests)
        steps, guidance = requests[0].steps, float(requests[0].guidance_scale)
        started = time.monotonic()

        def check_stop() -> None:
            if should_stop():
                raise GenerationCancelled(f"cancelled: {', '.join(ids)}")

        # Heun makes 2N-1 model calls for N steps; report whole steps, check for
        # cancellation after every call.
        reported = [0]

        def after_call(done: int, calls: int) -> None:
            step = steps if done == calls else done * steps // calls
            if step > reported[0]:
                reported[0] = step
                per_call = (time.monotonic() - sampling_started) / done
                progress(ProgressEvent(ids, "sampling", step, steps, per_call * (calls - done)))
            check_stop()

        check_stop()
        images = None
        if self.kind == "image":
            images = [decode_image(r.image or b"", r.job_id) for r in requests]
        progress(ProgressEvent(ids, "sampling", 0, steps, None))
        sampling_started = time.monotonic()
        try:
            latents = sample_latents(
                pipe,
                [r.prompt for r in requests],
                [r.seed for r in requests],
                guidance,
                steps,
                after_call,
                images,
            )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()  # leave the GPU usable for a smaller batch
            raise GenerationOutOfMemoryError(
                f"out of GPU memory sampling a batch of {len(ids)}"
            ) from exc

        meshes = []
        decode_started = time.monotonic()
        for i, latent in enumerate(latents):
            check_stop()
            done = time.monotonic() - decode_started
            eta = done / i * (len(ids) - i) if i else None
            progress(ProgressEvent(ids, "decoding", i, len(ids), eta))
            meshes.append(self._decode(pipe, latent, requests[i].job_id))
        progress(ProgressEvent(ids, "decoding", len(ids), len(ids), 0.0))

        results = []
        for i, (req, (verts, faces, colors)) in enumerate(zip(requests, meshes, strict=True)):
            check_stop()
            progress(ProgressEvent(ids, "exporting", i, len(ids), None))
            exported = export_mesh(verts, faces, colors, self.config.preview_size, req.face_budget)
            results.append(
                GenerationResult(
                    job_id=req.job_id,
                    glb=exported.glb,
                    preview_png=exported.preview_png,
                    vertices=exported.vertices,
                    faces=exported.faces,
                    seconds=time.monotonic() - started,
                )
            )
        progress(ProgressEvent(ids, "exporting", len(ids), len(ids), 0.0))
        return results

    def _decode(
        self, pipe: AnyPipeline, latent: torch.Tensor, job_id: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Marching cubes at ``frame_size``; returns numpy (verts, faces, colours)."""
        renderer = pipe.shap_e_renderer
        # Bigger query batches keep a GPU busy; on a CPU they only cost memory.
        query_batch = 65536 if self.device.type == "cuda" else 4096
        # decode_to_mesh crashes (torch.cat of nothing) when marching cubes finds
        # no surface; a hook on the marching-cubes step tells that case apart.
        vertex_counts: list[int] = []
        hook = renderer.mesh_decoder.register_forward_hook(
            lambda _module, _args, out: vertex_counts.append(len(out.verts))
        )
        try:
            with torch.inference_mode():
                mesh = renderer.decode_to_mesh(
                    latent[None],
                    self.device,
                    grid_size=self.config.frame_size,
                    query_batch_size=query_batch,
                )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise GenerationOutOfMemoryError(
                f"job {job_id}: out of GPU memory decoding the mesh"
            ) from exc
        except (RuntimeError, ValueError) as exc:
            if vertex_counts == [0]:
                raise GenerationError(
                    f"job {job_id}: the model produced an empty mesh (no surface); "
                    "try another seed or prompt"
                ) from exc
            raise GenerationError(f"job {job_id}: mesh decoding failed: {exc}") from exc
        finally:
            hook.remove()
        colors = torch.stack([mesh.vertex_channels[k] for k in ("R", "G", "B")], dim=1)
        return (
            mesh.verts.float().cpu().numpy(),
            mesh.faces.cpu().numpy(),
            colors.float().cpu().numpy(),
        )
