"""Sphere meshes for the instant generator: GLBs shaped like generated models.

A latitude-longitude sphere with a little deterministic noise (so its floats
barely compress, like a real model's), unit normals, linear RGB vertex colours
and uint32 indices, as ``agent.export`` writes them. Its poles are left open,
like a model that touches the edge of Shap-E's grid: two holes for the "for 3D
printing" repair to close. numpy only (no torch), as the instant model promises.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from numpy.typing import NDArray

from meshkit import bounds, decimate

F32 = NDArray[np.float32]


def sphere(rows: int, cols: int, seed: int) -> tuple[F32, F32, F32, NDArray[np.uint32]]:
    """(positions, normals, colours, flat uint32 indices) of an open-pole sphere."""
    theta = np.linspace(0.05, np.pi - 0.05, rows, dtype=np.float32)[:, None]
    phi = np.linspace(0, 2 * np.pi, cols, endpoint=False, dtype=np.float32)[None, :]
    normals = np.stack(
        [np.sin(theta) * np.cos(phi), np.cos(theta) + 0 * phi, np.sin(theta) * np.sin(phi)], -1
    ).reshape(-1, 3)
    noise = np.random.default_rng(seed).random((len(normals), 1), dtype=np.float32)
    positions = (normals * (0.5 + 0.01 * noise)).astype("<f4")
    colors = (0.5 + 0.5 * normals).astype("<f4")
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    a, b = r * cols + c, r * cols + (c + 1) % cols
    quads = np.stack([a, b, a + cols, b, b + cols, a + cols], -1)
    return positions, normals.astype("<f4"), colors, quads.reshape(-1).astype("<u4")


def glb_bytes(
    positions: NDArray[np.float32],
    normals: NDArray[np.float32],
    colors: NDArray[np.float32],
    indices: NDArray[np.uint32],
    size: int | None = None,
    generator: str = "shapefarm instant (sphere)",
) -> bytes:
    """A GLB of these arrays; ``size``: pad the JSON with spaces to exactly that many bytes."""
    parts = [
        indices.astype("<u4"),
        positions.astype("<f4"),
        normals.astype("<f4"),
        colors.astype("<f4"),
    ]
    views, offset = [], 0
    for i, part in enumerate(parts):
        views.append(
            {"buffer": 0, "byteOffset": offset, "byteLength": part.nbytes,
             "target": 34963 if i == 0 else 34962}
        )  # fmt: skip
        offset += part.nbytes
    n = len(positions)
    lo, hi = bounds(positions)
    doc = {
        "asset": {"version": "2.0", "generator": generator},
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
             "min": lo.tolist(), "max": hi.tolist()},
            {"bufferView": 2, "componentType": 5126, "count": n, "type": "VEC3"},
            {"bufferView": 3, "componentType": 5126, "count": n, "type": "VEC3"},
        ],
    }  # fmt: skip
    text = json.dumps(doc, separators=(",", ":")).encode()
    total = 12 + 8 + len(text) + 8 + offset
    pad = (-len(text)) % 4 if size is None else size - total
    if pad < 0 or pad % 4 != (-len(text)) % 4:
        # JSON padding keeps both chunks 4-byte aligned: only sizes of 4k bytes work.
        raise ValueError(f"instant size {size} is not a multiple of 4 bytes")
    text += b" " * pad
    head = struct.pack("<4sII", b"glTF", 2, total + pad) + struct.pack("<I4s", len(text), b"JSON")
    body = struct.pack("<I4s", offset, b"BIN\x00")
    return b"".join([head, text, body, *(p.tobytes() for p in parts)])


def sphere_model(faces: int, seed: int, budget: int | None) -> tuple[bytes, int, int, int]:
    """A sphere of about ``faces`` faces, decimated to ``budget`` as a real model would
    be (``agent.export``): (GLB, vertices, faces, faces before decimation)."""
    if faces < 8:
        raise ValueError(f"a sphere needs at least 8 faces (got {faces})")
    rows = max(3, round((faces / 4) ** 0.5) + 1)
    positions, normals, colors, indices = sphere(rows, 2 * (rows - 1), seed)
    tris = indices.reshape(-1, 3)
    before = len(tris)
    if budget is not None and before > budget:
        small = decimate(positions, tris, colors, budget)
        assert small.colors is not None
        positions, tris, colors = small.positions, small.faces, small.colors
        length = np.linalg.norm(positions, axis=1, keepdims=True)
        normals = (positions / np.maximum(length, 1e-12)).astype(np.float32)
    glb = glb_bytes(positions, normals, colors, tris.reshape(-1))
    return glb, len(positions), len(tris), before
