"""Hostile and huge GLBs for tests and benchmarks (``bench/hostile.py`` imports these).

Each bomb is about 1 MiB on the wire and cheap to build, and each would make a
naive checker (or trimesh) allocate hundreds of megabytes to gigabytes:

- ``stride_bomb``: POSITION accessors whose ``byteStride`` (4) is smaller than a
  VEC3 (12 bytes), so overlapping elements make one view look three times as
  large; hundreds of primitives reuse them.
- ``unused_accessor_bomb``: hundreds of large MAT4 accessors over one view with a
  tiny stride, used by no primitive (a loader that reads every accessor pays).
- ``instancing_bomb``: one real mesh drawn by thousands of nodes.
- ``nested_instancing_bomb``: a chain of nodes that each name the next one twice
  as a child, so ``depth`` nodes draw the mesh ``2**depth`` times.
- ``huge_mesh``: a legitimate, large agent-style mesh (a colourful wavy grid).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

MIB = 1024 * 1024
FLOAT, UINT = 5126, 5125


def build_glb(doc: dict[str, object], binary: bytes) -> bytes:
    """Assemble a GLB from a JSON document and a binary chunk (both padded to 4 bytes)."""
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    body += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def grid(faces: int) -> tuple[NDArray[np.float32], NDArray[np.uint32], NDArray[np.float32]]:
    """A y-up wavy square of about ``faces`` triangles with smooth vertex colours."""
    n = max(1, int(np.sqrt(faces / 2)))
    u, w = np.meshgrid(np.linspace(-0.5, 0.5, n + 1), np.linspace(-0.5, 0.5, n + 1))
    height = 0.05 * np.sin(8 * u) * np.cos(8 * w)
    verts = np.stack([u, height, w], axis=-1).reshape(-1, 3).astype(np.float32)
    ids = np.arange((n + 1) * (n + 1), dtype=np.uint32).reshape(n + 1, n + 1)
    a, b, c, d = ids[:-1, :-1], ids[:-1, 1:], ids[1:, :-1], ids[1:, 1:]
    tris = np.concatenate([np.stack([a, c, b], -1), np.stack([b, c, d], -1)], axis=0)
    colors = np.stack([u + 0.5, 0.5 + 0 * u, w + 0.5], axis=-1).reshape(-1, 3)
    return verts, tris.reshape(-1, 3), colors.astype(np.float32)


def mesh_glb(
    verts: NDArray[np.float32],
    faces: NDArray[np.uint32],
    colors: NDArray[np.float32] | None = None,
    normals: bool = True,
    nodes: list[dict[str, Any]] | None = None,
) -> bytes:
    """A GLB of one mesh as the agent writes it (indices, POSITION, NORMAL, COLOR_0)."""
    parts = [faces.astype("<u4").tobytes(), verts.astype("<f4").tobytes()]
    kinds = [("SCALAR", UINT), ("VEC3", FLOAT)]
    attributes = {"POSITION": 1}
    if normals:
        up = np.zeros_like(verts)
        up[:, 1] = 1.0
        attributes["NORMAL"] = len(parts)
        parts.append(up.astype("<f4").tobytes())
        kinds.append(("VEC3", FLOAT))
    if colors is not None:
        attributes["COLOR_0"] = len(parts)
        parts.append(colors.astype("<f4").tobytes())
        kinds.append(("VEC3", FLOAT))
    views, accessors, offset = [], [], 0
    for i, (part, (kind, comp)) in enumerate(zip(parts, kinds, strict=True)):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(part)})
        count = len(faces) * 3 if i == 0 else len(verts)
        accessor: dict[str, object] = {
            "bufferView": i, "componentType": comp, "count": count, "type": kind
        }  # fmt: skip
        if i == 1:
            accessor["min"] = verts.min(axis=0).tolist()
            accessor["max"] = verts.max(axis=0).tolist()
        accessors.append(accessor)
        offset += len(part)
    doc: dict[str, object] = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": nodes or [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0}]}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    return build_glb(doc, b"".join(parts))


def huge_mesh(faces: int = 2_400_000, normals: bool = False) -> bytes:
    """A legitimate large model: ``faces`` triangles, vertex colours (58 MiB at 2.4 M)."""
    verts, tris, colors = grid(faces)
    return mesh_glb(verts, tris, colors, normals=normals)


def stride_bomb(size: int = MIB, primitives: int = 300, stride: int = 4) -> bytes:
    """Overlapping POSITION elements (``stride`` < 12) reused by many primitives."""
    count = ((size - 12) // stride + 1) // 3 * 3
    view = {"buffer": 0, "byteOffset": 0, "byteLength": size, "byteStride": stride}
    accessor = {"bufferView": 0, "componentType": FLOAT, "count": count, "type": "VEC3"}
    prim = {"attributes": {"POSITION": 0}}
    doc: dict[str, object] = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [prim] * primitives}],
        "accessors": [accessor],
        "bufferViews": [view],
        "buffers": [{"byteLength": size}],
    }
    # Small finite floats (0x3C3C3C3C is about 0.0115) at every 4-byte offset.
    return build_glb(doc, b"\x3c" * size)


def unused_accessor_bomb(size: int = MIB, accessors: int = 200) -> bytes:
    """A small real mesh plus ``accessors`` big MAT4 accessors no primitive uses."""
    verts, tris, colors = grid(200)
    small = mesh_glb(verts, tris, colors)
    doc, binary = split_glb(small)
    start = len(binary)
    binary += b"\x3c" * size
    views = doc["bufferViews"]
    views.append({"buffer": 0, "byteOffset": start, "byteLength": size, "byteStride": 4})
    count = (size - 64) // 4 + 1
    big = {"bufferView": len(views) - 1, "componentType": FLOAT, "count": count, "type": "MAT4"}
    doc["accessors"] += [dict(big) for _ in range(accessors)]
    doc["buffers"] = [{"byteLength": len(binary)}]
    return build_glb(doc, binary)


def instancing_bomb(instances: int = 1000, faces: int = 20_000, depth: int = 1) -> bytes:
    """One mesh of ``faces`` triangles drawn by ``instances`` nodes, in chains of ``depth``."""
    verts, tris, colors = grid(faces)
    nodes: list[dict[str, Any]] = [{"children": []}]
    for i in range(instances):
        parent = 0
        for level in range(depth):
            nodes.append({"mesh": 0, "translation": [float(i % 64), float(level), float(i // 64)]})
            nodes[parent].setdefault("children", []).append(len(nodes) - 1)
            parent = len(nodes) - 1
    return mesh_glb(verts, tris, colors, nodes=nodes)


def nested_instancing_bomb(depth: int = 24, faces: int = 2000) -> bytes:
    """``depth`` nodes, each with the next node as its child twice: 2**depth draws."""
    verts, tris, colors = grid(faces)
    nodes: list[dict[str, Any]] = [{"children": [i + 1, i + 1]} for i in range(depth)]
    nodes.append({"mesh": 0, "scale": [0.5, 0.5, 0.5]})
    return mesh_glb(verts, tris, colors, nodes=nodes)


def split_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON document and binary chunk of a GLB built by ``build_glb``."""
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + n])
    return doc, data[20 + n + 8 :]


BOMBS = {
    "stride": stride_bomb,
    "unused_accessors": unused_accessor_bomb,
    "instancing": instancing_bomb,
    "nested_instancing": nested_instancing_bomb,
}


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels: kilobytes on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row_bytes = bytes(1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row_bytes) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
