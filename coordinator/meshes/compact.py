"""The viewer's copy of a model: quantized and meshopt-compressed (``EXT_meshopt_compression``).

Made from the stored (normalised) GLB the first time a viewer asks for it, cached
like the OBJ/STL/PLY conversions, and sent to ``<model-viewer>``, which decodes it
with the meshopt decoder vendored from npm. Downloads keep the plain GLB: many
tools (slicers, older Blender) read no meshopt. docs/benchmarks.md, "Storing GLBs
compressed", gives the sizes and the CPU.

What changes against the stored GLB, all invisible in the viewer:

- triangles are reordered so that most follow a neighbour, vertices renumbered in the
  order the triangles first use them (unused ones dropped), which keeps neighbouring
  vertices' bytes alike, and a triangle may start at another of its corners (same
  winding);
- positions become 14-bit unsigned integers over the model's bounding box
  (``KHR_mesh_quantization``), the node's uniform scale and translation putting them
  back: an error of at most 1/32766 of the box's longest side;
- normals 8-bit signed normalized, colours 8-bit unsigned normalized RGBA (linear,
  as stored);
- indices 16-bit where every index fits below 65535 (WebGL's restart index), else
  32-bit, in the extension's ``TRIANGLES`` bitstream (about 2 bytes a triangle on
  our models, 1 where the mesh is a clean strip); attributes in ``ATTRIBUTES``.

Pure functions over arrays: no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from coordinator.meshes.glb import MATERIAL, Mesh, glb_bytes
from coordinator.meshes.glbcheck import UBYTE, UINT, USHORT
from meshkit import bounds
from meshkit.meshopt import encode_attributes, encode_triangles, locality_order

# The largest model that gets a compressed copy: 1 s of CPU to make for a coherent
# mesh, 3.3 s for random triangles (the worst), once. Shap-E's models have 13k (grid
# 64) to 220k (grid 256) faces; a larger upload is shown and downloaded as stored.
MAX_FACES = 500_000
BYTE = 5120
POSITION_BITS = 14
MESHOPT = "EXT_meshopt_compression"
QUANTIZATION = "KHR_mesh_quantization"
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _positions(points: NDArray[np.float32]) -> tuple[NDArray[np.uint16], list[float], float]:
    """(quantized (n, 4) with a zero pad, translation, uniform scale)."""
    lo, hi = bounds(points) if len(points) else (np.zeros(3), np.zeros(3))
    extent = float(np.max(hi - lo)) if len(points) else 0.0
    top = (1 << POSITION_BITS) - 1
    scale = extent / top if extent > 0 else 1.0
    out = np.zeros((len(points), 4), np.uint16)
    scaled = (points.astype(np.float64) - lo.astype(np.float64)) / scale
    out[:, :3] = np.clip(np.rint(scaled), 0, top)
    return out, [float(x) for x in lo], scale


class TooLargeError(ValueError):
    """More faces than ``MAX_FACES``."""


def has_copy(faces: int) -> bool:
    """Whether a model of ``faces`` faces gets a compressed copy."""
    return faces <= MAX_FACES


def compact_glb(mesh: Mesh) -> bytes:
    """``mesh`` as a quantized, meshopt-compressed GLB (see the module's docstring)."""
    if not has_copy(len(mesh.faces)):
        raise TooLargeError(
            f"{len(mesh.faces):,} faces is too many for a compressed copy "
            f"(at most {MAX_FACES:,}): use the GLB"
        )
    faces = mesh.faces[locality_order(mesh.faces)]
    triangles, order = encode_triangles(faces, len(mesh.positions))
    count = len(order)
    quantized, translation, scale = _positions(mesh.positions[order])
    streams: list[tuple[str, NDArray[np.uint8], dict[str, Any]]] = [
        ("POSITION", quantized.view(np.uint8).reshape(count, 8),
         {"componentType": USHORT, "type": "VEC3",
          "min": [int(v) for v in quantized[:, :3].min(axis=0)] if count else [0, 0, 0],
          "max": [int(v) for v in quantized[:, :3].max(axis=0)] if count else [0, 0, 0]}),
    ]  # fmt: skip
    if mesh.normals is not None:
        normals = np.zeros((count, 4), np.int8)
        normals[:, :3] = np.clip(np.rint(mesh.normals[order] * 127.0), -127, 127)
        streams.append(
            ("NORMAL", normals.view(np.uint8),
             {"componentType": BYTE, "normalized": True, "type": "VEC3"})
        )  # fmt: skip
    if mesh.colors is not None:
        colors = np.full((count, 4), 255, np.uint8)
        width = mesh.colors.shape[1]
        colors[:, :width] = np.clip(np.rint(mesh.colors[order] * 255.0), 0, 255)
        streams.append(
            ("COLOR_0", colors,
             {"componentType": UBYTE, "normalized": True, "type": "VEC4"})
        )  # fmt: skip
    wide = count > 0xFFFF  # 16-bit indices stop below the restart index 65535
    index_type, index_size = (UINT, 4) if wide else (USHORT, 2)
    parts: list[bytes] = []
    views: list[dict[str, Any]] = []
    accessors: list[dict[str, Any]] = []
    attributes: dict[str, int] = {}
    compressed_at = plain_at = 0

    def view(data: bytes, length: int, stride: int, target: int, mode: str) -> int:
        nonlocal compressed_at, plain_at
        padded = data + bytes(-len(data) % 4)
        extension = {"buffer": 0, "byteOffset": compressed_at, "byteLength": len(data),
                     "byteStride": stride, "count": length // stride, "mode": mode}  # fmt: skip
        entry: dict[str, Any] = {"buffer": 1, "byteOffset": plain_at, "byteLength": length,
                                 "target": target, "extensions": {MESHOPT: extension}}  # fmt: skip
        if target == ARRAY_BUFFER:
            entry["byteStride"] = stride
        views.append(entry)
        parts.append(padded)
        compressed_at += len(padded)
        plain_at += length + (-length % 4)
        return len(views) - 1

    indices = mesh.faces.size
    index_view = view(
        triangles, indices * index_size, index_size, ELEMENT_ARRAY_BUFFER, "TRIANGLES"
    )
    accessors.append(
        {"bufferView": index_view, "componentType": index_type, "count": indices,
         "type": "SCALAR"}
    )  # fmt: skip
    for name, data, accessor in streams:
        stride = data.shape[1] if count else 4
        at = view(encode_attributes(data), count * stride, stride, ARRAY_BUFFER, "ATTRIBUTES")
        attributes[name] = len(accessors)
        accessors.append({"bufferView": at, "count": count, **accessor})
    doc = {
        "asset": {"version": "2.0", "generator": "shapefarm coordinator (viewer copy)"},
        "extensionsUsed": [MESHOPT, QUANTIZATION],
        "extensionsRequired": [MESHOPT, QUANTIZATION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "translation": translation, "scale": [scale] * 3}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "material": 0}]}],
        "materials": [MATERIAL],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [
            {"byteLength": compressed_at},
            # The decoded views' room: no data of its own (the decoder fills it).
            {"byteLength": plain_at, "extensions": {MESHOPT: {"fallback": True}}},
        ],
    }
    return glb_bytes(doc, parts, compressed_at)
