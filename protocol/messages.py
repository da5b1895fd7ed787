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
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_SEED,
    MIN_STEPS,
)

PROTOCOL_VERSION = 1
"""The version this code speaks. Bumped on any incompatible change."""

SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

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

Stage = Literal["loading", "queued", "sampling", "decoding", "exporting", "uploading"]
AckStatus = Literal["stored", "duplicate", "rejected"]
ArtifactKind = Literal["glb", "preview"]


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


class JobSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    job: JobId
    attempt: Attempt
    prompt: Prompt
    seed: Seed
    guidance: Guidance
    steps: Steps
    model: ShortText = "shap-e"


class Assign(_Message, tag="assign", frozen=True):
    """One batch: jobs with identical generation settings, run in one GPU pass."""

    jobs: Annotated[tuple[JobSpec, ...], msgspec.Meta(min_length=1, max_length=64)]


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


class Error(_Message, tag="error", frozen=True):
    code: Annotated[str, msgspec.Meta(max_length=64)]
    message: Reason
    fatal: bool = False


AgentMessage = Hello | Heartbeat | Accepted | Progress | Result | Failed
CoordinatorMessage = Welcome | Assign | Cancel | ResultAck | Drain | Error
Message = AgentMessage | CoordinatorMessage
