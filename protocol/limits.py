"""The generation limits: the one definition shared by both peers.

The coordinator's submit form and JSON API admit at most these values, the
wire messages carry at most these values, the agents run at most these
values, and a tier that allows more is refused at start-up
(:func:`check_tier_limits`). One place, so an admitted job is always one an
agent can run.
"""

from __future__ import annotations

MAX_PROMPT_CHARS = 500
"""Characters in a prompt (Shap-E's text encoder reads only the first ~77 tokens anyway)."""

MIN_STEPS = 1
MAX_STEPS = 256
"""Diffusion steps per job: the most an agent runs (a CPU agent needs minutes per step)."""

MIN_GUIDANCE = 0.0
MAX_GUIDANCE = 50.0
"""Classifier-free guidance scale; far above ~30 Shap-E's output is noise."""

MIN_VARIANTS = 1
MAX_VARIANTS = 16
"""Jobs (variants, each its own seed) one request may create."""

MIN_SEED = 0
MAX_SEED = 2**32 - 1
"""Seeds are unsigned 32-bit integers; variants count up from the base seed modulo 2**32."""

MIN_TARGET_FACES = 200
MAX_TARGET_FACES = 500_000
"""A job's mesh target (decimation): at least a recognisable shape, at most what a
model may sensibly have; a model with fewer faces than its target is kept as made."""

FACE_PRESETS: dict[str, int] = {"low": 5_000, "medium": 20_000, "high": 80_000}
"""The form's named detail levels as face counts ("original": no target)."""

MAX_PRINT_FACES = 200_000
"""The most faces a "for 3D printing" model keeps: the coordinator repairs it (close
holes, merge vertices, fix winding), and that work must stay bounded per job."""

FACE_TOLERANCE = 0.05
"""How far above its target a decimated mesh may end (fraction of the target)."""

DEFAULT_STEPS = 64
DEFAULT_GUIDANCE = 15.0
DEFAULT_VARIANTS = 1

# -- image-to-3D ------------------------------------------------------------------------

MAX_IMAGE_UPLOAD_BYTES = 10 * 1024 * 1024
"""An uploaded input image (PNG, JPEG or WebP) as the user sends it."""

MAX_IMAGE_SIDE = 4096
"""Pixels on either side of an uploaded image; checked before any pixel is decoded."""

MIN_IMAGE_SIDE = 16
"""Smaller images carry nothing Shap-E could use."""

IMAGE_SIDE = 1024
"""The longest side of the image the coordinator keeps and sends to agents (Shap-E's
image encoder sees 224 x 224 anyway)."""

MAX_IMAGE_BYTES = 8 * 1024 * 1024
"""The kept image (a PNG of at most IMAGE_SIDE pixels a side, about 3 MiB at worst) on
the wire: a bound on what an agent buffers per image job."""

IMAGE_CHUNK_BYTES = 256 * 1024
"""Payload of one binary frame carrying an input image to an agent."""


class LimitError(ValueError):
    """A configured limit (e.g. a tier's) above what the protocol and agents can run."""

    def __init__(self, what: str, key: str, value: float, maximum: float) -> None:
        super().__init__(
            f"{what}: {key} = {value:g} is more than agents can run "
            f"(the generation limit is {maximum:g}, see protocol/limits.py)"
        )
        self.key = key
        self.value = value
        self.maximum = maximum


def check_tier_limits(what: str, *, max_steps: int, max_guidance: float, max_variants: int) -> None:
    """Raise :class:`LimitError` if a tier's limits exceed the generation limits."""
    for key, value, maximum in (
        ("max_steps", max_steps, MAX_STEPS),
        ("max_guidance", max_guidance, MAX_GUIDANCE),
        ("max_variants", max_variants, MAX_VARIANTS),
    ):
        if value > maximum:
            raise LimitError(what, key, value, maximum)


def face_budget(target_faces: int | None, printable: bool) -> int | None:
    """The most faces a job's model should have (None: as generated).

    A printable model is capped at :data:`MAX_PRINT_FACES` even without a target,
    so its repair on the coordinator is bounded."""
    if printable:
        return min(target_faces or MAX_PRINT_FACES, MAX_PRINT_FACES)
    return target_faces


def over_budget(faces: int, budget: int | None) -> bool:
    """Whether a mesh of ``faces`` is above ``budget`` by more than the tolerance."""
    return budget is not None and faces > budget * (1 + FACE_TOLERANCE)
