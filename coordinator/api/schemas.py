"""Typed bodies of the JSON API (decoded at the edge by :mod:`coordinator.api.decoding`).

Every JSON body, query string and path segment under ``/api`` is decoded here
into a msgspec type, strictly: no coercion (``"steps": 12.7`` and
``"prompt": ["a", "b"]`` are 422s), unknown fields refused, bounds from the one
place that defines them (generation limits in :mod:`protocol.messages`,
submission limits in :mod:`coordinator.services.submission`). The same types generate
the OpenAPI document (:mod:`coordinator.api.openapi`), so it cannot drift.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, TypeVar, get_args

import msgspec

from coordinator.i18n import gettext_noop as N_
from coordinator.meshes.convert import FORMATS
from coordinator.meshes.options import MeshRequest
from coordinator.services import job_images, mesh_options, outbound, submission
from protocol import limits
from protocol.messages import Guidance, JobId, Seed, Steps, TargetFaces
from scheduler.lifecycle import JobState

T = TypeVar("T")

MAX_PAGE = 100
MAX_OFFSET = 1_000_000  # far past any user's jobs; a bigger one would reach the database
MAX_QUERY = 200

# -- requests ---------------------------------------------------------------

PROMPT_PATTERN = r"^[^\x00-\x08\x0a-\x1f]*[^\s\x00-\x1f][^\x00-\x08\x0a-\x1f]*$"

Prompt = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=limits.MAX_PROMPT_CHARS,
        # Something to draw, no control characters (tabs allowed): what JobRequest
        # checks after stripping, said in the schema so clients can check it too.
        pattern=PROMPT_PATTERN,
        description=N_("What to make, in English (Shap-E understands English best)."),
        examples=["a red chair"],
    ),
]
Variants = Annotated[
    int,
    msgspec.Meta(
        ge=limits.MIN_VARIANTS,
        le=limits.MAX_VARIANTS,
        description=N_(
            "How many jobs to make from this prompt (seeds seed, seed+1, …); "
            "your plan may allow fewer."
        ),
    ),
]


InputImageBytes = Annotated[
    bytes,
    msgspec.Meta(
        max_length=limits.MAX_IMAGE_UPLOAD_BYTES,
        description=N_(
            "Image-to-3D: a PNG, JPEG or WebP picture (at most 10 MB and 4096×4096 pixels), "
            "base64-encoded. It is checked and re-encoded (metadata removed, at most 1024 "
            "pixels a side kept); a refused picture is answered with image_invalid, "
            "image_unsupported or image_too_large and nothing is stored. With an image the "
            "prompt is optional: it only names the model."
        ),
    ),
]


# -- mesh options (a group of their own) --
MeshDetail = Literal["original", "high", "medium", "low"]


class MeshSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What to make of the generated mesh."""

    target_faces: Annotated[
        TargetFaces | MeshDetail | None,
        msgspec.Meta(
            description=N_(
                "Decimate to about this many faces (at most 5 percent more), or a named level: "
                "high 80,000, medium 20,000, low 5,000, original (or null): as generated. "
                "A model with fewer faces is kept as generated."
            )
        ),
    ] = None
    printable: Annotated[
        bool,
        msgspec.Meta(
            description=N_(
                "For 3D printing: the STL download is made watertight where possible "
                "(holes closed, duplicate vertices merged, consistent outward winding); "
                "the result's `watertight` says whether it is. Caps the model at "
                "200,000 faces."
            )
        ),
    ] = False

    def choice(self) -> MeshRequest:
        return mesh_options.from_api(self.target_faces, self.printable)


class MeshView(msgspec.Struct, frozen=True):
    target_faces: int | None
    printable: bool


WebhookUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=outbound.MAX_URL)]


class JobSubmission(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A text-to-3D request (a prompt) or an image-to-3D request (an image, the prompt
    then an optional caption): one job per variant. Your plan may allow fewer steps,
    less guidance or fewer variants than the schema's bounds (job_rejected)."""

    prompt: Annotated[
        Prompt | msgspec.UnsetType,
        msgspec.Meta(description=N_("Required without an image; with one, its caption.")),
    ] = msgspec.UNSET
    seed: Annotated[Seed | None, msgspec.Meta(description=N_("null or absent: random"))] = None
    guidance: Annotated[
        Guidance, msgspec.Meta(description=N_("How closely to follow the prompt."))
    ] = limits.DEFAULT_GUIDANCE
    steps: Annotated[
        Steps, msgspec.Meta(description=N_("Diffusion steps: more is slower, often finer."))
    ] = limits.DEFAULT_STEPS
    variants: Variants = limits.DEFAULT_VARIANTS
    # -- image-to-3D ----------------------------------------------------------
    image: InputImageBytes | None = None
    mesh: Annotated[
        MeshSpec | None, msgspec.Meta(description=N_("Mesh options; absent: as generated."))
    ] = None
    webhook_url: Annotated[
        WebhookUrl | None,
        msgspec.Meta(
            description=N_(
                "https:// (or http://) URL told when each of these jobs ends, signed with "
                "this key's webhook secret (make it on your profile first)."
            ),
        ),
    ] = None

    def __post_init__(self) -> None:
        if self.prompt is msgspec.UNSET and self.image is None:
            # msgspec reports it like any missing field (validation_failed at body.prompt).
            raise ValueError("Object missing required field `prompt` (or send an `image`)")

    def to_request(self, image: job_images.InputImage | None = None) -> submission.JobRequest:
        """The service's request (``image``: :attr:`image` checked and re-encoded); it
        checks what a schema cannot (blank, control characters)."""
        fields = msgspec.structs.asdict(self)
        fields.pop("image")
        fields.pop("mesh")
        fields.pop("webhook_url")
        if fields["prompt"] is msgspec.UNSET:
            fields["prompt"] = ""
        request = submission.JobRequest.parse(fields, image=image)
        if self.mesh is None:
            return request
        return dataclasses.replace(request, mesh=self.mesh.choice())


class VisibilityChange(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Make a job's model public (anyone with the link may view it) or private."""

    public: bool


class JobListQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE, description=N_("Page size."))] = 20
    offset: Annotated[
        int, msgspec.Meta(ge=0, le=MAX_OFFSET, description=N_("Jobs to skip, newest first."))
    ] = 0
    q: Annotated[
        str,
        msgspec.Meta(max_length=MAX_QUERY, description=N_("Only prompts containing this text.")),
    ] = ""
    state: Annotated[
        JobState | msgspec.UnsetType, msgspec.Meta(description=N_("Only jobs in this state."))
    ] = msgspec.UNSET


class JobWaitQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    wait: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=60,
            description=N_(
                "Seconds to hold the answer until the job finished (long-poll); 0: at once."
            ),
        ),
    ] = 0


class JobPath(msgspec.Struct, frozen=True):
    job_id: Annotated[JobId, msgspec.Meta(description=N_("The job's id."))]


DownloadFormat = Literal["glb", "obj", "stl", "ply", "meshopt"]
if set(get_args(DownloadFormat)) != set(FORMATS):  # a new format needs its name here too
    raise RuntimeError("schemas.DownloadFormat and meshes.convert.FORMATS differ")


class DownloadPath(msgspec.Struct, frozen=True):
    job_id: Annotated[JobId, msgspec.Meta(description=N_("The job's id."))]
    fmt: Annotated[DownloadFormat, msgspec.Meta(description=N_("The file format."))]


# -- responses --------------------------------------------------------------


class ProgressView(msgspec.Struct, frozen=True, omit_defaults=True):
    """The live state: a queued job's place and estimate, a running job's stage and step."""

    state: JobState
    stage: str | None = None
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None
    position: int | None = None
    agents_online: Annotated[
        int | None,
        msgspec.Meta(
            description=N_(
                "While queued: connected agents that can run this job (an image job needs "
                "one with the image model); at 0 it waits until one connects."
            )
        ),
    ] = None


class InputImageView(msgspec.Struct, frozen=True):
    """An image job's input picture as kept (our PNG re-encoding)."""

    sha256: str
    size: int
    width: int
    height: int
    url: Annotated[str, msgspec.Meta(description=N_("Where to download it (PNG)."))]


class ResultView(msgspec.Struct, frozen=True):
    sha256: str
    size: int
    vertices: int
    faces: int
    seconds: float
    agent_id: str | None
    downloads: dict[str, str]
    watertight: Annotated[
        bool | None,
        msgspec.Meta(
            description=N_(
                "For a job for 3D printing: whether its STL is watertight; null otherwise."
            )
        ),
    ] = None


class JobView(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    prompt: str
    seed: int
    guidance: float
    steps: int
    state: JobState
    attempt: int
    public: bool
    error: str | None
    created_at: Annotated[float, msgspec.Meta(description=N_("Unix time, seconds."))]
    finished_at: float | None
    progress: ProgressView
    url: Annotated[str, msgspec.Meta(description=N_("The job's web page."))]
    # image-to-3D: always present (a default would be left out of the JSON)
    kind: Annotated[
        Literal["text", "image"],
        msgspec.Meta(description=N_("text: made from the prompt; image: from a picture.")),
    ]
    result: ResultView | None = None
    # -- image-to-3D ----------------------------------------------------------
    image: InputImageView | None = None
    mesh: Annotated[
        MeshView | None, msgspec.Meta(description=N_("The mesh options asked for, if any."))
    ] = None
    webhook_url: Annotated[
        str | None, msgspec.Meta(description=N_("The job's own webhook URL, if it has one."))
    ] = None


class SubmittedJobs(msgspec.Struct, frozen=True):
    jobs: list[JobView]


class JobPage(msgspec.Struct, frozen=True):
    total: int
    limit: int
    offset: int
    jobs: list[JobView]
