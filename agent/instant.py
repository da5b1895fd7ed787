"""The "instant" generator: a small valid GLB at once, for tests, benchmarks and smoke tests.

``--model instant`` makes an agent that needs no torch, no weights and no GPU:
it answers every job with a four-triangle tetrahedron whose shape depends only
on the job's seed (deterministic), after an optional delay spread over
progress steps. It exercises everything around generation (protocol,
spooling, uploads, leases, the coordinator's GLB checks) at full speed, so the
chaos test, ``bench/*.py`` and operators checking a new deployment use it.
It is never picked unless named; the real Shap-E path does not change.

Options ride in the model name, so no new setting is needed::

    instant                      # no delay; one progress step per requested step
    instant:delay=0.5,steps=8    # 0.5 s per job, 8 progress events along the way
    instant:size=1048576         # a GLB of exactly that many bytes, shaped like a real
                                 # model (indexed sphere, normals, vertex colours)
"""

from __future__ import annotations

import functools
import json
import random
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.batches import GeneratorTypes
from agent.generation import (
    MAX_STEPS,
    DeviceInfo,
    GenerationRequest,
    GenerationResult,
    ProgressEvent,
)

NAME = "instant"
MAX_DELAY_S = 3600.0
MIN_SIZE, MAX_SIZE = 2048, 64 * 1024 * 1024  # the coordinator's default result limit
DEVICE = DeviceInfo("cpu", "instant (test generator, no GPU)", 0, "none")


class InstantCancelledError(Exception):
    """``should_stop()`` turned true between steps."""


class InstantError(Exception):
    """Never raised; the runner wants an error type like the real GenerationError."""


@dataclass(frozen=True)
class InstantOptions:
    delay_s: float = 0.0  # wall time per job
    steps: int | None = None  # progress events per job; None: the job's own step count
    size: int | None = None  # GLB bytes; None: the tiny tetrahedron


def is_instant(model: str) -> bool:
    return model == NAME or model.startswith(NAME + ":")


def parse_options(model: str) -> InstantOptions:
    """``instant[:delay=S,steps=N]`` → options; ValueError names what is wrong."""
    if not is_instant(model):
        raise ValueError(f"{model!r} is not an instant model name")
    _, _, spec = model.partition(":")
    values: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("delay", "steps", "size"):
            raise ValueError(
                f"instant model option {part!r}: use delay=SECONDS, steps=N or size=BYTES"
            )
        values[key] = value
    try:
        delay = float(values.get("delay", "0"))
        steps = int(values["steps"]) if "steps" in values else None
        size = int(values["size"]) if "size" in values else None
    except ValueError:
        raise ValueError(
            f"instant model options {spec!r}: delay is a number, steps and size integers"
        ) from None
    if not 0.0 <= delay <= MAX_DELAY_S:
        raise ValueError(f"instant delay must be in 0..{MAX_DELAY_S:g} s (got {delay})")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"instant steps must be in 1..{MAX_STEPS} (got {steps})")
    if size is not None and (not MIN_SIZE <= size <= MAX_SIZE or size % 4):
        raise ValueError(
            f"instant size must be a multiple of 4 in {MIN_SIZE}..{MAX_SIZE} bytes (got {size})"
        )
    return InstantOptions(delay, steps, size)


def tetrahedron_glb(seed: int) -> bytes:
    """A valid binary glTF 2.0: one indexed tetrahedron, its size and skew from ``seed``."""
    rng = random.Random(seed)  # determinism, not security
    scale = 0.5 + rng.random()
    base = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    points = [tuple(scale * c + 0.1 * rng.random() for c in p) for p in base]
    positions = b"".join(struct.pack("<3f", *p) for p in points)
    indices = struct.pack("<12H", 0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3)
    binary = positions + indices  # 48 + 24 bytes, both 4-byte aligned
    lows = [min(p[i] for p in points) for i in range(3)]
    highs = [max(p[i] for p in points) for i in range(3)]
    doc = {
        "asset": {"version": "2.0", "generator": "shapefarm instant"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 48, "target": 34962},
            {"buffer": 0, "byteOffset": 48, "byteLength": 24, "target": 34963},
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
             "min": lows, "max": highs},
            {"bufferView": 1, "componentType": 5123, "count": 12, "type": "SCALAR"},
        ],
    }  # fmt: skip
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(text), b"JSON"),
            text,
            struct.pack("<I4s", len(binary), b"BIN\x00"),
            binary,
        ]
    )


@functools.lru_cache(maxsize=4)
def sized_glb(size: int) -> bytes:
    """A valid GLB of exactly ``size`` bytes shaped like a generated model.

    A latitude-longitude sphere with a little deterministic noise (so its floats
    barely compress, like a real model's), unit normals, linear RGB vertex colours
    and uint32 indices, as ``agent.export`` writes them; the JSON chunk is padded
    with spaces to land on the exact size. Built once per size: the benchmark's
    generation costs nothing.
    """
    import numpy as np  # the agent extra has it; the tetrahedron path needs none

    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"instant size must be in {MIN_SIZE}..{MAX_SIZE} bytes")
    # 36 bytes per vertex (position, normal, colour) and about 2 faces of 12 bytes each.
    room = size - 1024
    cols = max(4, int((room / 60) ** 0.5))
    rows = max(2, room // 60 // cols)
    while rows > 2 and rows * cols * 36 + (rows - 1) * cols * 24 > room:
        rows -= 1
    theta = np.linspace(0.05, np.pi - 0.05, rows, dtype=np.float32)[:, None]
    phi = np.linspace(0, 2 * np.pi, cols, endpoint=False, dtype=np.float32)[None, :]
    normals = np.stack(
        [np.sin(theta) * np.cos(phi), np.cos(theta) + 0 * phi, np.sin(theta) * np.sin(phi)], -1
    ).reshape(-1, 3)
    noise = np.random.default_rng(size).random((len(normals), 1), dtype=np.float32)
    positions = (normals * (0.5 + 0.01 * noise)).astype("<f4")
    colors = (0.5 + 0.5 * normals).astype("<f4")
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    a, b = r * cols + c, r * cols + (c + 1) % cols
    quads = np.stack([a, b, a + cols, b, b + cols, a + cols], -1)
    indices = quads.reshape(-1).astype("<u4")
    parts = [indices, positions, normals.astype("<f4"), colors]
    views, offset = [], 0
    for i, part in enumerate(parts):
        views.append(
            {"buffer": 0, "byteOffset": offset, "byteLength": part.nbytes,
             "target": 34963 if i == 0 else 34962}
        )  # fmt: skip
        offset += part.nbytes
    n = len(positions)
    doc = {
        "asset": {"version": "2.0", "generator": "shapefarm instant (sized)"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [
            {"attributes": {"POSITION": 1, "NORMAL": 2, "COLOR_0": 3}, "indices": 0, "mode": 4}
        ]}],
        "buffers": [{"byteLength": offset}],
        "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": 5125, "count": len(indices), "type": "SCALAR"},
            {"bufferView": 1, "componentType": 5126, "count": n, "type": "VEC3",
             "min": positions.min(0).tolist(), "max": positions.max(0).tolist()},
            {"bufferView": 2, "componentType": 5126, "count": n, "type": "VEC3"},
            {"bufferView": 3, "componentType": 5126, "count": n, "type": "VEC3"},
        ],
    }  # fmt: skip
    text = json.dumps(doc, separators=(",", ":")).encode()
    pad = size - (12 + 8 + len(text) + 8 + offset)
    if pad < 0 or pad % 4 != (-len(text)) % 4:
        # JSON padding keeps both chunks 4-byte aligned: only sizes of 4k bytes work.
        raise ValueError(f"instant size {size} is not a multiple of 4 bytes")
    text += b" " * pad
    head = struct.pack("<4sII", b"glTF", 2, size) + struct.pack("<I4s", len(text), b"JSON")
    return b"".join([head, text, struct.pack("<I4s", offset, b"BIN\x00"), *(p.data for p in parts)])


def validate_request(request: GenerationRequest) -> None:
    if not request.job_id or not request.prompt.strip():
        raise ValueError(f"job {request.job_id!r}: prompt must be non-empty text")
    if not 1 <= request.steps <= MAX_STEPS:
        raise ValueError(f"job {request.job_id}: steps must be in 1..{MAX_STEPS}")


class InstantGenerator:
    """Same interface as :class:`agent.generator.Generator`, without torch."""

    def __init__(self, options: InstantOptions | None = None) -> None:
        self.options = options or InstantOptions()
        self.device_info = DEVICE
        self._stop_poll = threading.Event()  # never set: only used as an interruptible sleep

    def batch_key(self, request: GenerationRequest) -> tuple[Any, ...]:
        return (request.guidance_scale, request.steps)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        progress: Callable[[ProgressEvent], None],
        should_stop: Callable[[], bool],
    ) -> list[GenerationResult]:
        started = time.monotonic()
        ids = tuple(r.job_id for r in requests)
        total = self.options.steps or max(r.steps for r in requests)
        pause = self.options.delay_s / total
        for step in range(1, total + 1):
            if should_stop():
                raise InstantCancelledError("stopped")
            if pause:
                # Short waits so a stop request is seen within 50 ms.
                end = time.monotonic() + pause
                while (left := end - time.monotonic()) > 0 and not should_stop():
                    self._stop_poll.wait(min(left, 0.05))
            eta = pause * (total - step) if pause else 0.0
            progress(ProgressEvent(ids, "sampling", step, total, eta))
        seconds = time.monotonic() - started
        size = self.options.size
        return [
            GenerationResult(
                r.job_id, sized_glb(size) if size else tetrahedron_glb(r.seed), None, 4, 4, seconds
            )
            for r in requests
        ]


TYPES = GeneratorTypes(GenerationRequest, InstantCancelledError, InstantError, validate_request)


def load(settings: Any) -> InstantGenerator:
    """The agent CLI's generator factory for ``--model instant[:…]``."""
    return InstantGenerator(parse_options(settings.model))
