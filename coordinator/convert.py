"""Check GLB uploads from agents and convert stored GLBs for download.

Pure functions over bytes: no coordinator imports, no I/O. A volunteer agent is
untrusted, so ``inspect_glb`` checks the container structure itself (sizes,
offsets, index ranges) before any geometry library looks at it.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import trimesh

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
TRIANGLES = 4
COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
TYPE_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# glTF is y-up; STL files go to slicers, which take z as up.
Y_UP_TO_Z_UP = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)

ExportFormat = Literal["obj", "stl", "ply"]


class InvalidModelError(ValueError):
    """The bytes are not a GLB we are willing to store or serve."""


@dataclass(frozen=True)
class GlbInfo:
    vertices: int
    faces: int
    has_colors: bool


@dataclass(frozen=True)
class FileFormat:
    extension: str
    content_type: str


FORMATS: dict[str, FileFormat] = {
    "glb": FileFormat(".glb", "model/gltf-binary"),
    "obj": FileFormat(".obj", "model/obj"),
    "stl": FileFormat(".stl", "model/stl"),
    "ply": FileFormat(".ply", "application/x-ply"),
}


def _split_chunks(data: bytes) -> tuple[dict[str, object], bytes]:
    if len(data) < 20:
        raise InvalidModelError(f"too short for a GLB ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC:
        raise InvalidModelError("not a GLB file (bad magic)")
    if version != 2:
        raise InvalidModelError(f"unsupported glTF container version {version}")
    if length != len(data):
        raise InvalidModelError(f"GLB header says {length} bytes but {len(data)} were given")
    chunks: list[tuple[int, bytes]] = []
    offset = 12
    while offset < len(data):
        if offset + 8 > len(data):
            raise InvalidModelError("truncated GLB chunk header")
        size, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + size > len(data):
            raise InvalidModelError("truncated GLB chunk")
        chunks.append((kind, data[offset + 8 : offset + 8 + size]))
        offset += 8 + size
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise InvalidModelError("GLB does not start with a JSON chunk")
    try:
        doc = json.loads(chunks[0][1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidModelError(f"GLB JSON chunk does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidModelError("GLB JSON chunk is not an object")
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == CHUNK_BIN else b""
    return doc, binary


def _list(doc: dict[str, object], key: str) -> list[dict[str, object]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidModelError(f"GLB field {key!r} is malformed")
    return value


def _check_accessor(doc: dict[str, object], index: object, binary: bytes) -> dict[str, object]:
    accessors, views = _list(doc, "accessors"), _list(doc, "bufferViews")
    if not isinstance(index, int) or not 0 <= index < len(accessors):
        raise InvalidModelError(f"primitive refers to missing accessor {index!r}")
    acc = accessors[index]
    count, view_i = acc.get("count"), acc.get("bufferView")
    width = TYPE_WIDTH.get(str(acc.get("type")))
    comp = COMPONENT_BYTES.get(acc.get("componentType"))  # type: ignore[arg-type]
    if not isinstance(count, int) or count < 0 or width is None or comp is None:
        raise InvalidModelError(f"accessor {index} is malformed")
    if not isinstance(view_i, int) or not 0 <= view_i < len(views):
        raise InvalidModelError(f"accessor {index} has no buffer view")
    view = views[view_i]
    if view.get("buffer") != 0 or "uri" in _list(doc, "buffers")[0]:
        # External buffers would make us fetch URIs named by an untrusted agent.
        raise InvalidModelError("GLB refers to external buffers")
    start = int(view.get("byteOffset", 0)) + int(acc.get("byteOffset", 0))  # type: ignore[call-overload]
    stride = int(view.get("byteStride", 0)) or width * comp  # type: ignore[call-overload]
    need = start + (stride * (count - 1) + width * comp if count else 0)
    view_end = int(view.get("byteOffset", 0)) + int(view.get("byteLength", -1))  # type: ignore[call-overload]
    if need > view_end or view_end > len(binary):
        raise InvalidModelError(f"accessor {index} reads past the end of the binary chunk")
    return acc


def inspect_glb(data: bytes, max_bytes: int) -> GlbInfo:
    """Return counts for a sane triangle-mesh GLB, else raise InvalidModelError."""
    if len(data) > max_bytes:
        raise InvalidModelError(f"model is {len(data)} bytes, over the {max_bytes}-byte limit")
    doc, binary = _split_chunks(data)
    meshes = _list(doc, "meshes")
    if not meshes:
        raise InvalidModelError("GLB contains no meshes")
    if not _list(doc, "buffers"):
        raise InvalidModelError("GLB has no buffers")
    vertices = faces = 0
    has_colors = False
    for mesh in meshes:
        primitives = mesh.get("primitives")
        if not isinstance(primitives, list) or not primitives:
            raise InvalidModelError("GLB mesh has no primitives")
        for prim in primitives:
            if not isinstance(prim, dict) or prim.get("mode", TRIANGLES) != TRIANGLES:
                raise InvalidModelError("only triangle meshes are accepted")
            attrs = prim.get("attributes")
            if not isinstance(attrs, dict) or "POSITION" not in attrs:
                raise InvalidModelError("GLB primitive has no POSITION attribute")
            pos = _check_accessor(doc, attrs["POSITION"], binary)
            for name, acc_index in attrs.items():
                acc = _check_accessor(doc, acc_index, binary)
                if acc["count"] != pos["count"]:
                    raise InvalidModelError(f"attribute {name} count differs from POSITION")
            has_colors = has_colors or "COLOR_0" in attrs
            vertices += int(pos["count"])  # type: ignore[call-overload]
            if "indices" in prim:
                idx = _check_accessor(doc, prim["indices"], binary)
                faces += int(idx["count"]) // 3  # type: ignore[call-overload]
            else:
                faces += int(pos["count"]) // 3  # type: ignore[call-overload]
    if vertices == 0 or faces == 0:
        raise InvalidModelError("GLB meshes are empty")
    mesh = _load_mesh(data)  # the geometry library must agree that it parses
    if len(mesh.faces) and (mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices)):
        raise InvalidModelError("GLB indices point past the vertex list")
    if not np.all(np.isfinite(mesh.vertices)):
        raise InvalidModelError("GLB vertices contain NaN or infinite values")
    return GlbInfo(vertices=vertices, faces=faces, has_colors=has_colors)


def _load_mesh(data: bytes) -> trimesh.Trimesh:
    try:
        # Skipping materials makes trimesh keep COLOR_0 as plain vertex colours.
        scene = trimesh.load(
            io.BytesIO(data), file_type="glb", force="scene", process=False, skip_materials=True
        )
        mesh = scene.to_geometry()
    except Exception as exc:  # trimesh raises many types on bad input
        raise InvalidModelError(f"GLB geometry does not load: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InvalidModelError("GLB has no triangle geometry")
    return mesh


def _linear_to_srgb8(rgba: np.ndarray) -> np.ndarray:
    # COLOR_0 is linear light; OBJ and PLY viewers show vertex colours as sRGB.
    c = rgba[:, :3].astype(np.float64) / 255.0
    srgb = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    out = rgba.copy()
    out[:, :3] = np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)
    return out


def convert_glb(data: bytes, fmt: ExportFormat) -> bytes:
    """Convert a GLB to OBJ or PLY (vertex colours kept, as sRGB) or STL (z-up)."""
    if fmt not in ("obj", "stl", "ply"):
        raise ValueError(f"unsupported format {fmt!r}: choose obj, stl or ply")
    mesh = _load_mesh(data)
    if fmt == "stl":
        mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        mesh.apply_transform(Y_UP_TO_Z_UP)
        return bytes(mesh.export(file_type="stl"))
    if mesh.visual.kind == "vertex":
        colors = _linear_to_srgb8(np.asarray(mesh.visual.vertex_colors))
        mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)
    exported = mesh.export(file_type=fmt)
    return exported.encode("utf-8") if isinstance(exported, str) else bytes(exported)
