"""Untrusted GLB files: decode what :mod:`~coordinator.meshes.glbcheck` bounded; normalise.

Only the accessors that primitives use are read, as numpy views on the binary
chunk. What gets stored is a normalised GLB (one mesh, one primitive, no
instancing), so downloads never parse hostile structure again. Pure functions
over bytes: no coordinator imports, no I/O.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from coordinator.meshes.glbcheck import (
    CHUNK_BIN,
    CHUNK_JSON,
    FLOAT,
    GLB_MAGIC,
    UINT,
    Accessor,
    Drawn,
    GlbLimits,
    Primitive,
    fail,
    scan,
)
from meshkit import bounds


@dataclass(frozen=True)
class GlbInfo:
    vertices: int
    faces: int
    has_colors: bool


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh, y-up; colours linear RGB(A) in 0..1, as COLOR_0 has them."""

    positions: NDArray[np.float32]  # (n, 3)
    faces: NDArray[np.uint32]  # (f, 3)
    normals: NDArray[np.float32] | None = None  # (n, 3)
    colors: NDArray[np.float32] | None = None  # (n, 3) or (n, 4)


def _array(binary: memoryview, acc: Accessor) -> NDArray[np.generic]:
    """A read-only view (no copy) of an accessor ``glbcheck`` checked."""
    item = np.dtype(acc.dtype).itemsize
    shape = (acc.count, acc.width) if acc.width > 1 else (acc.count,)
    strides = (acc.stride, item) if acc.width > 1 else (acc.stride,)
    return np.ndarray(shape, acc.dtype, buffer=binary, offset=acc.offset, strides=strides)


def _colors(binary: memoryview, acc: Accessor, width: int) -> NDArray[np.float32]:
    raw = _array(binary, acc)
    if acc.dtype == "<f4" and acc.width == width:
        return raw  # type: ignore[return-value]  # already float32 of that width: a view
    scale = {"<f4": 1.0, "<u1": 255.0, "<u2": 65535.0}[acc.dtype]
    out = np.ones((acc.count, width), np.float32)
    out[:, : acc.width] = raw[:, :width].astype(np.float32) / np.float32(scale)
    return out


def _assemble(binary: memoryview, drawn: Drawn) -> Mesh:
    items = [(p, m) for mesh, m in drawn for p in mesh]
    n = sum(p.position.count for p, _ in items)
    f = sum(p.faces for p, _ in items)
    with_normals = all(p.normal for p, _ in items)
    width = 4 if any(p.color and p.color.width == 4 for p, _ in items) else 3
    with_colors = any(p.color for p, _ in items)
    identity = len(items) == 1 and np.array_equal(items[0][1], np.eye(4))
    first = items[0][0]
    if (
        identity
        and first.position.stride == 12
        and (first.indices is None or first.indices.dtype == "<u4")
    ):
        # Already normal form (what our agents send): views, no copies (asarray of an
        # array already of that dtype, as the accessor checks made sure, copies nothing).
        faces = (
            np.asarray(_array(binary, first.indices), np.uint32).reshape(-1, 3)
            if first.indices
            else np.arange(n, dtype=np.uint32).reshape(-1, 3)
        )
        normals = np.asarray(_array(binary, first.normal), np.float32) if first.normal else None
        colors = _colors(binary, first.color, width) if first.color else None
        positions = np.asarray(_array(binary, first.position), np.float32)
        return _checked(Mesh(positions, faces, normals, colors), items)
    pos = np.empty((n, 3), np.float32)
    nrm = np.empty((n, 3), np.float32) if with_normals else None
    col = np.ones((n, width), np.float32) if with_colors else None
    idx = np.empty((f, 3), np.uint32)
    v0 = f0 = 0
    for prim, world in items:
        count, nf = prim.position.count, prim.faces
        m3 = world[:3, :3].astype(np.float32)
        np.matmul(_array(binary, prim.position), m3.T, out=pos[v0 : v0 + count])
        pos[v0 : v0 + count] += world[:3, 3].astype(np.float32)
        if nrm is not None and prim.normal is not None:
            # Normals take the inverse transpose: the cofactor matrix, signed by det.
            cof = np.stack([np.cross(m3[1], m3[2]), np.cross(m3[2], m3[0]), np.cross(m3[0], m3[1])])
            cof *= np.float32(np.sign(np.linalg.det(m3)) or 1.0)
            out = nrm[v0 : v0 + count]
            np.matmul(_array(binary, prim.normal), cof.T, out=out)
            length = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, length, out=out, where=length > 1e-12)
        if col is not None and prim.color is not None:
            col[v0 : v0 + count] = _colors(binary, prim.color, width)
        tri = idx[f0 : f0 + nf]
        if prim.indices:
            src = _array(binary, prim.indices)
            if int(src.max()) >= count:
                raise fail("GLB indices point past the vertex list")
            tri.reshape(-1)[:] = src
        else:
            tri.reshape(-1)[:] = np.arange(count, dtype=np.uint32)
        if np.linalg.det(m3) < 0:
            tri[:, [1, 2]] = tri[:, [2, 1]]  # a mirroring instance flips the winding
        tri += np.uint32(v0)
        v0, f0 = v0 + count, f0 + nf
    return _checked(Mesh(pos, idx, nrm, col), [])


def _checked(mesh: Mesh, unchecked: Sequence[tuple[Primitive, object]]) -> Mesh:
    if len(mesh.faces) and unchecked and int(mesh.faces.max()) >= len(mesh.positions):
        raise fail("GLB indices point past the vertex list")
    if not np.isfinite(mesh.positions).all():
        raise fail("GLB vertices contain NaN or infinite values")
    if mesh.normals is not None and not np.isfinite(mesh.normals).all():
        raise fail("GLB normals contain NaN or infinite values")
    colors = mesh.colors
    if colors is not None and not (
        np.isfinite(colors).all() and 0 <= colors.min() <= colors.max() <= 1
    ):
        colors = np.clip(np.nan_to_num(colors, nan=1.0), 0.0, 1.0)
        return Mesh(mesh.positions, mesh.faces, mesh.normals, colors)
    return mesh


def read_mesh(data: bytes, limits: GlbLimits) -> Mesh:
    """Bound the GLB's cost from its JSON, then decode what its scene draws."""
    binary, drawn = scan(data, limits)
    # Huge transforms overflow to inf, which _checked rejects: not worth a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        return _assemble(binary, drawn)


def encode_glb(mesh: Mesh) -> bytes:
    """A GLB of one mesh with one primitive: indices, POSITION, NORMAL?, COLOR_0?."""
    faces = np.ascontiguousarray(mesh.faces, dtype="<u4")
    parts: list[NDArray[np.generic]] = [faces, np.ascontiguousarray(mesh.positions, "<f4")]
    lo, hi = bounds(mesh.positions)
    accessors: list[dict[str, object]] = [
        {"bufferView": 0, "componentType": UINT, "count": faces.size, "type": "SCALAR",
         "min": [int(faces.min())], "max": [int(faces.max())]},
        {"bufferView": 1, "componentType": FLOAT, "count": len(mesh.positions), "type": "VEC3",
         "min": [float(x) for x in lo], "max": [float(x) for x in hi]},
    ]  # fmt: skip
    attributes = {"POSITION": 1}
    for name, extra in (("NORMAL", mesh.normals), ("COLOR_0", mesh.colors)):
        if extra is not None:
            attributes[name] = len(parts)
            accessors.append(
                {"bufferView": len(parts), "componentType": FLOAT, "count": len(extra),
                 "type": f"VEC{extra.shape[1]}"}
            )  # fmt: skip
            parts.append(np.ascontiguousarray(extra, "<f4"))
    views, offset = [], 0
    for i, part in enumerate(parts):
        views.append(
            {"buffer": 0, "byteOffset": offset, "byteLength": part.nbytes,
             "target": 34963 if i == 0 else 34962}
        )  # fmt: skip
        offset += part.nbytes  # 4-byte components: every part stays aligned
    doc = {
        "asset": {"version": "2.0", "generator": "shapefarm coordinator (normalised)"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "material": 0}]}],
        "materials": [MATERIAL],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    return glb_bytes(doc, [p.data for p in parts], offset)


# The one material of a stored model: its vertex colours, lit, not metallic.
MATERIAL: dict[str, object] = {
    "name": "vertex-colour",
    "pbrMetallicRoughness": {
        "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
        "metallicFactor": 0.0,
        "roughnessFactor": 0.8,
    },
}


def glb_bytes(doc: dict[str, object], parts: Sequence[bytes | memoryview], size: int) -> bytes:
    """A GLB of ``doc`` (JSON) and a binary chunk of ``parts`` (``size`` bytes, a
    multiple of 4), in one copy straight from the parts."""
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + size
    head = struct.pack("<4sII", GLB_MAGIC, 2, total) + struct.pack("<II", len(text), CHUNK_JSON)
    return b"".join([head, text, struct.pack("<II", size, CHUNK_BIN), *parts])


def normalise_glb(data: bytes, limits: GlbLimits) -> tuple[bytes, GlbInfo]:
    """Check an untrusted GLB and return the normalised GLB to store, with its counts."""
    mesh = read_mesh(data, limits)
    info = GlbInfo(len(mesh.positions), len(mesh.faces), mesh.colors is not None)
    return encode_glb(mesh), info
