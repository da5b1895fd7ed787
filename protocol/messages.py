"""The coordinator⇄agent messages: one tagged struct per message type.

Control messages are JSON text frames whose ``type`` field names the struct;
result bytes travel in binary frames (see :mod:`protocol.frames`). Every field
carries its bounds here, so :func:`protocol.codec.decode` rejects anything out
of range before any other code sees it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocol.limits import (
    DEFAULT_STEPS,
    MAX_GUIDANCE,
    MAX_IMAGE_BYTES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TARGET_FACES,
    MIN_GUIDANCE,
    MIN_SEED,
    MIN_STEPS,
    MIN_TARGET_FACES,
)

PROTOCOL_VERSION = 3
"""The newest version this code speaks. Bumped on any incompatible change."""

SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2, 3)
"""Version 2 adds the owner controls: ``status`` and ``declined`` (agent →
coordinator), ``pause`` and ``resume`` (coordinator → agent). Version 3 adds
image-to-3D: a ``JobSpec`` may carry ``kind`` and ``image``, and the image's bytes
follow its ``assign`` in binary frames (see :mod:`protocol.images`); and ``mesh``
(:class:`MeshOptions`), which the coordinator's session leaves out for an older peer
(:func:`for_version`). Every older message is unchanged, so both sides still speak 1
and 2 with an older peer."""

IMAGE_JOBS_SINCE = 3
"""The first protocol version whose agents may be given image jobs."""

TEXT_MODEL = "shap-e"
IMAGE_MODEL = "shap-e-img2img"
"""The model names agents advertise in ``Capabilities.models`` and jobs ask for."""

# Bounds shared by both peers. A volunteer agent is untrusted: every string and
# number it sends is bounded so a hostile peer cannot make the coordinator
# allocate or store without limit.
JobId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+\Z")]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=1000)]
# The generation bounds come from protocol.limits (shared with the forms and the agent).
Prompt = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROMPT_CHARS)]
Seed = Annotated[int, msgspec.Meta(ge=MIN_SEED, le=MAX_SEED)]
Steps = Annotated[int, msgspec.Meta(ge=MIN_STEPS, le=MAX_STEPS)]
Guidance = Annotated[float, msgspec.Meta(ge=MIN_GUIDANCE, le=MAX_GUIDANCE)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
Reason = Annotated[str, msgspec.Meta(max_length=2000)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
Size = Annotated[int, msgspec.Meta(ge=0, le=2**40)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31)]

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

Stage = Literal["loading", "queued", "sampling", "decoding", "exporting", "uploading"]
AckStatus = Literal["stored", "duplicate", "rejected"]
ArtifactKind = Literal["glb", "preview"]

# The first protocol version in which each newer message type is legal.
SINCE_VERSION: dict[str, int] = {"status": 2, "declined": 2, "pause": 2, "resume": 2}


class _Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True):
    """Base of every message; the subclass's ``tag`` is the wire ``type``."""


# --------------------------------------------------------------------------
# agent → coordinator


class Capabilities(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    device: ShortText = "cpu"
    gpu_name: ShortText = ""
    vram_mb: Count = 0
    models: tuple[ShortText, ...] = ("shap-e",)
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    max_steps: Steps = DEFAULT_STEPS
    formats: tuple[ArtifactKind, ...] = ("glb",)


class Hello(_Message, tag="hello", frozen=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    versions: Annotated[tuple[int, ...], msgspec.Meta(min_length=1, max_length=16)]
    agent_version: ShortText
    capabilities: Capabilities
    # Jobs this agent still holds from before a reconnect (spooled results),
    # so the coordinator can keep their leases instead of requeueing them.
    holding: Annotated[tuple[tuple[JobId, Attempt], ...], msgspec.Meta(max_length=256)] = ()


class Heartbeat(_Message, tag="heartbeat", frozen=True):
    seq: Count
    running: Annotated[tuple[JobId, ...], msgspec.Meta(max_length=64)] = ()


class Accepted(_Message, tag="accepted", frozen=True):
    job: JobId
    attempt: Attempt


class Progress(_Message, tag="progress", frozen=True):
    job: JobId
    attempt: Attempt
    stage: Stage
    step: Count
    total: Count
    eta_s: Annotated[float, msgspec.Meta(ge=0.0, le=1e7)] | None = None


class Artifact(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    kind: ArtifactKind
    size: Size
    sha256: Sha256


class Result(_Message, tag="result", frozen=True):
    """Header of an upload; the artifacts' bytes follow, in order, as chunks of ``stream``."""

    job: JobId
    attempt: Attempt
    stream: Annotated[int, msgspec.Meta(ge=1, le=2**32 - 1)]
    artifacts: Annotated[tuple[Artifact, ...], msgspec.Meta(min_length=1, max_length=4)]
    vertices: Count = 0
    faces: Count = 0
    seconds: Annotated[float, msgspec.Meta(ge=0.0, le=1e7)] = 0.0


class Failed(_Message, tag="failed", frozen=True):
    job: JobId
    attempt: Attempt
    reason: Reason
    retryable: bool = True


class Status(_Message, tag="status", frozen=True):
    """(v2) The owner's controls as they stand; sent after ``welcome`` and on every change.

    A paused agent takes no new work: the coordinator stops assigning to it.
    """

    paused: bool = False
    reason: ShortText = ""  # why, in words, e.g. "outside working hours"
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None  # lowered after an OOM
    prefer_own: bool = False  # run the owner's own jobs first
    prefer_users: Annotated[tuple[Username, ...], msgspec.Meta(max_length=32)] = ()


DeclineReason = Literal["blocked", "paused"]


class Declined(_Message, tag="declined", frozen=True):
    """(v2) The agent will not run this assignment; it goes back in line, no try spent.

    ``blocked``: the owner's content list refuses it, so this agent is never
    offered that job again; ``paused``: the owner paused, another agent (or this
    one, later) may take it.
    """

    job: JobId
    attempt: Attempt
    reason: DeclineReason


# --------------------------------------------------------------------------
# coordinator → agent


class Limits(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    max_frame_bytes: Size
    max_result_bytes: Size
    chunk_bytes: Size


class Welcome(_Message, tag="welcome", frozen=True):
    agent_id: JobId
    version: int
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)]
    lease_s: Annotated[float, msgspec.Meta(gt=0.0, le=86400.0)]
    limits: Limits
    approved: bool = True


JobKind = Literal["text", "image"]
Caption = Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_CHARS)]


class ImageRef(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """(v3) An image job's input: a PNG whose bytes follow the ``assign`` in binary frames."""

    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGE_BYTES)]
    sha256: Sha256


# ---- mesh options (version 3) -------------------------------------------
TargetFaces = Annotated[int, msgspec.Meta(ge=MIN_TARGET_FACES, le=MAX_TARGET_FACES)]


class MeshOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """(v3) What the user asked of the job's mesh.

    ``target_faces``: decimate to about this many faces (None: as generated);
    ``printable``: the STL download is made watertight where possible (by the
    coordinator) and the mesh is kept under ``limits.MAX_PRINT_FACES``.
    An agent decimates to ``limits.face_budget(target_faces, printable)``."""

    target_faces: TargetFaces | None = None
    printable: bool = False


class JobSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One job of an ``assign``. Fields at their default are left out on the wire, so a
    text job reads the same to a version-1 agent as before."""

    job: JobId
    attempt: Attempt
    # A text job's prompt (never blank); an image job's optional caption.
    prompt: Caption
    seed: Seed
    guidance: Guidance
    steps: Steps
    model: ShortText = TEXT_MODEL
    # -- image-to-3D (v3) ------------------------------------------------------
    kind: JobKind = "text"
    image: ImageRef | None = None
    mesh: MeshOptions | None = None  # (v3)

    def __post_init__(self) -> None:
        # msgspec turns these into validation errors naming the message.
        if self.kind == "text":
            if not self.prompt.strip():
                raise ValueError("a text job needs a prompt")
            if self.image is not None:
                raise ValueError("a text job carries no image")
        elif self.image is None:
            raise ValueError("an image job needs an image")


class Assign(_Message, tag="assign", frozen=True):
    """One batch: jobs with identical generation settings, run in one GPU pass.

    (v3) The distinct input images of its image jobs follow it at once as binary
    frames (:mod:`protocol.images`); all of them share one image at most.
    """

    jobs: Annotated[tuple[JobSpec, ...], msgspec.Meta(min_length=1, max_length=64)]

    def __post_init__(self) -> None:
        if len({spec.image for spec in self.jobs if spec.image is not None}) > 1:
            raise ValueError("the image jobs of one assign must share one image")

    @property
    def image(self) -> ImageRef | None:
        """The input image its image jobs share, if it has any."""
        return next((spec.image for spec in self.jobs if spec.image is not None), None)


class Cancel(_Message, tag="cancel", frozen=True):
    job: JobId
    attempt: Attempt
    reason: Reason = ""


class ResultAck(_Message, tag="result_ack", frozen=True):
    """Answer to a finished upload; the agent may forget its spooled copy on any answer."""

    job: JobId
    attempt: Attempt
    status: AckStatus
    reason: Reason = ""


class Drain(_Message, tag="drain", frozen=True):
    reason: Reason = ""


class Pause(_Message, tag="pause", frozen=True):
    """(v2) The owner paused the agent from the web page; ``cancel`` drops the running batch."""

    cancel: bool = False
    reason: Reason = ""


class Resume(_Message, tag="resume", frozen=True):
    """(v2) The owner resumed the agent from the web page."""

    reason: Reason = ""


class Error(_Message, tag="error", frozen=True):
    code: Annotated[str, msgspec.Meta(max_length=64)]
    message: Reason
    fatal: bool = False


AgentMessage = Hello | Heartbeat | Accepted | Progress | Result | Failed | Status | Declined
CoordinatorMessage = Welcome | Assign | Cancel | ResultAck | Drain | Pause | Resume | Error
Message = AgentMessage | CoordinatorMessage


def for_version(message: CoordinatorMessage, version: int) -> CoordinatorMessage:
    """``message`` as a peer speaking ``version`` may receive it: fields newer than
    that version are dropped (the coordinator then does their work itself)."""
    if (
        version < IMAGE_JOBS_SINCE
        and isinstance(message, Assign)
        and any(s.image is not None for s in message.jobs)
    ):
        # The farm never offers image jobs to such an agent (AgentConn.models).
        raise ValueError(f"an image job cannot be sent to a version-{version} agent")
    if version < 3 and isinstance(message, Assign) and any(s.mesh for s in message.jobs):
        return Assign(jobs=tuple(msgspec.structs.replace(s, mesh=None) for s in message.jobs))
    return message
