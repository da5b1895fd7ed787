"""The generator's value types and request validation, free of torch.

Shared by the Shap-E generator (``agent.generator``), the test generator
(``agent.instant``) and the runner, so an agent that never loads torch (the
instant model, the CLI's ``--help``) still speaks the same types.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from protocol.limits import (
    MAX_GUIDANCE,
    MAX_IMAGE_BYTES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    face_budget,
)
from protocol.messages import MeshOptions

__all__ = [
    "MAX_GUIDANCE",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_STEPS",
    "DeviceInfo",
    "GenerationRequest",
    "GenerationResult",
    "Progress",
    "ProgressEvent",
    "validate_request",
]


@dataclass(frozen=True)
class DeviceInfo:
    device: str
    gpu_name: str
    vram_mb: int
    dtype: str


@dataclass(frozen=True)
class GenerationRequest:
    job_id: str
    prompt: str
    seed: int
    guidance_scale: float
    steps: int
    # Image-to-3D: the input image (PNG bytes, sha256-verified on arrival); the
    # prompt is then an optional caption the model does not read.
    image: bytes | None = None
    mesh: MeshOptions | None = None  # the job's mesh options (protocol v3)

    @property
    def kind(self) -> str:
        return "text" if self.image is None else "image"

    @property
    def face_budget(self) -> int | None:
        """The most faces the exported model should have (None: as generated)."""
        if self.mesh is None:
            return None
        return face_budget(self.mesh.target_faces, self.mesh.printable)


@dataclass(frozen=True)
class ProgressEvent:
    job_ids: tuple[str, ...]
    stage: str  # "loading" | "sampling" | "decoding" | "exporting"
    step: int
    total: int
    eta_s: float | None = None


@dataclass(frozen=True)
class GenerationResult:
    job_id: str
    glb: bytes
    preview_png: bytes | None
    vertices: int
    faces: int
    seconds: float  # wall time from the start of the batch until this result was ready


Progress = Callable[[ProgressEvent], None]


def validate_request(req: GenerationRequest) -> None:
    """Raise ValueError naming the first field of ``req`` that is out of range."""
    if not isinstance(req.job_id, str) or not req.job_id:
        raise ValueError("job_id must be a non-empty string")
    if req.image is not None:
        if not isinstance(req.image, bytes) or not 0 < len(req.image) <= MAX_IMAGE_BYTES:
            raise ValueError(f"job {req.job_id}: the image must be 1..{MAX_IMAGE_BYTES} bytes")
        if not isinstance(req.prompt, str):
            raise ValueError(f"job {req.job_id}: the caption must be text")
    elif not isinstance(req.prompt, str) or not req.prompt.strip():
        raise ValueError(f"job {req.job_id}: prompt must be non-empty text")
    if len(req.prompt) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"job {req.job_id}: prompt has {len(req.prompt)} characters (max {MAX_PROMPT_CHARS})"
        )
    if isinstance(req.seed, bool) or not isinstance(req.seed, int) or not 0 <= req.seed <= MAX_SEED:
        raise ValueError(f"job {req.job_id}: seed must be an integer in 0..{MAX_SEED}")
    if (
        isinstance(req.steps, bool)
        or not isinstance(req.steps, int)
        or not 1 <= req.steps <= MAX_STEPS
    ):
        raise ValueError(f"job {req.job_id}: steps must be an integer in 1..{MAX_STEPS}")
    g = req.guidance_scale
    if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g):
        raise ValueError(f"job {req.job_id}: guidance_scale must be a finite number")
    if not 0.0 <= g <= MAX_GUIDANCE:
        raise ValueError(f"job {req.job_id}: guidance_scale must be in 0..{MAX_GUIDANCE:g}")
