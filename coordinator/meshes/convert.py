"""Convert stored GLBs to OBJ, STL and PLY for download.

The writers are numpy code that streams to a file in chunks, so a conversion
costs the decoded mesh plus one chunk, whatever the mesh size (trimesh's
exporters build the whole file, several times over, in memory). Colours stay
linear in the GLB; OBJ and PLY viewers show vertex colours as sRGB, so those
get sRGB. STL files go to slicers, which take z as up. Pure functions: no
coordinator imports.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from coordinator.meshes.compact import compact_glb
from coordinator.meshes.glb import GlbInfo, Mesh, normalise_glb, read_mesh
from coordinator.meshes.glbcheck import GlbLimits, InvalidModelError

__all__ = [
    "FORMATS",
    "ExportFormat",
    "GlbInfo",
    "GlbLimits",
    "InvalidModelError",
    "convert_glb",
    "inspect_glb",
    "normalise_glb",
    "write_mesh",
]

ExportFormat = Literal["obj", "stl", "ply", "meshopt"]
CHUNK = 8192  # rows per write: small enough to bound memory and to let other threads run


@dataclass(frozen=True)
class FileFormat:
    extension: str
    content_type: str


FORMATS: dict[str, FileFormat] = {
    "glb": FileFormat(".glb", "model/gltf-binary"),
    "obj": FileFormat(".obj", "model/obj"),
    "stl": FileFormat(".stl", "model/stl"),
    "ply": FileFormat(".ply", "application/x-ply"),
    # The viewer's copy: quantized and meshopt-compressed (coordinator.meshes.compact).
    "meshopt": FileFormat(".meshopt.glb", "model/gltf-binary"),
}


def inspect_glb(data: bytes, max_bytes: int) -> GlbInfo:
    """Counts for a sane triangle-mesh GLB (default limits), else InvalidModelError."""
    return normalise_glb(data, GlbLimits(max_bytes=max_bytes))[1]


def _srgb(rgba: NDArray[np.float32]) -> NDArray[np.float32]:
    c = rgba[:, :3]
    out = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return out.astype(np.float32)


def _srgb8(rgba: NDArray[np.float32]) -> NDArray[np.uint8]:
    out = np.full((len(rgba), 4), 255, np.uint8)
    out[:, :3] = np.clip(np.round(_srgb(rgba) * 255.0), 0, 255)
    if rgba.shape[1] == 4:
        out[:, 3] = np.clip(np.round(rgba[:, 3] * 255.0), 0, 255)
    return out


def _write_stl(mesh: Mesh, out: BinaryIO) -> None:
    record = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    out.write(b"shapefarm binary STL, z-up".ljust(80, b" "))
    out.write(struct.pack("<I", len(mesh.faces)))
    for start in range(0, len(mesh.faces), CHUNK):
        tri = mesh.positions[mesh.faces[start : start + CHUNK]]  # (k, 3, 3), y-up
        tri = np.stack([tri[..., 0], -tri[..., 2], tri[..., 1]], axis=-1)  # z-up
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        rows = np.zeros(len(tri), record)
        rows["n"] = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
        rows["v"] = tri
        out.write(rows.tobytes())


def _write_ply(mesh: Mesh, out: BinaryIO) -> None:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    kinds = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment shapefarm"]
    header.append(f"element vertex {len(mesh.positions)}")
    header += [f"property {kinds[kind]} {name}" for name, kind in fields]
    header += [f"element face {len(mesh.faces)}", "property list uchar int vertex_indices"]
    out.write(("\n".join([*header, "end_header"]) + "\n").encode("ascii"))
    vertex = np.dtype(fields)
    for start in range(0, len(mesh.positions), CHUNK):
        end = start + CHUNK
        rows = np.empty(len(mesh.positions[start:end]), vertex)
        for i, axis in enumerate("xyz"):
            rows[axis] = mesh.positions[start:end, i]
            if mesh.normals is not None:
                rows["n" + axis] = mesh.normals[start:end, i]
        if mesh.colors is not None:
            rgba = _srgb8(mesh.colors[start:end])
            for i, name in enumerate(("red", "green", "blue", "alpha")):
                rows[name] = rgba[:, i]
        out.write(rows.tobytes())
    face = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
    for start in range(0, len(mesh.faces), CHUNK):
        chunk = mesh.faces[start : start + CHUNK]
        rows = np.empty(len(chunk), face)
        rows["n"] = 3
        rows["i"] = chunk
        out.write(rows.tobytes())


def _write_obj(mesh: Mesh, out: BinaryIO) -> None:
    out.write(b"# shapefarm OBJ, y-up; vertex colours (sRGB) follow the coordinates\n")
    v_line = "v %.6f %.6f %.6f" + (" %.4f %.4f %.4f" if mesh.colors is not None else "") + "\n"
    for start in range(0, len(mesh.positions), CHUNK):
        rows = mesh.positions[start : start + CHUNK].astype(np.float64)
        if mesh.colors is not None:
            rows = np.hstack([rows, _srgb(mesh.colors[start : start + CHUNK])])
        out.write(((v_line * len(rows)) % tuple(rows.ravel().tolist())).encode("ascii"))
    if mesh.normals is not None:
        for start in range(0, len(mesh.normals), CHUNK):
            rows = mesh.normals[start : start + CHUNK].astype(np.float64)
            text = ("vn %.4f %.4f %.4f\n" * len(rows)) % tuple(rows.ravel().tolist())
            out.write(text.encode("ascii"))
    f_line = "f %d//%d %d//%d %d//%d\n" if mesh.normals is not None else "f %d %d %d\n"
    for start in range(0, len(mesh.faces), CHUNK):
        ids = mesh.faces[start : start + CHUNK].astype(np.int64) + 1
        if mesh.normals is not None:
            ids = np.repeat(ids, 2, axis=1)
        out.write(((f_line * len(ids)) % tuple(ids.ravel().tolist())).encode("ascii"))


def _write_meshopt(mesh: Mesh, out: BinaryIO) -> None:
    out.write(compact_glb(mesh))


WRITERS = {"obj": _write_obj, "stl": _write_stl, "ply": _write_ply, "meshopt": _write_meshopt}


def write_mesh(mesh: Mesh, fmt: ExportFormat, out: BinaryIO) -> None:
    """Write ``mesh`` as OBJ or PLY (vertex colours kept, as sRGB), STL (z-up) or the
    viewer's meshopt-compressed GLB."""
    if fmt not in WRITERS:
        raise ValueError(f"unsupported format {fmt!r}: choose one of {', '.join(WRITERS)}")
    WRITERS[fmt](mesh, out)


def convert_glb(data: bytes, fmt: ExportFormat, limits: GlbLimits | None = None) -> bytes:
    """The GLB converted to ``fmt``, in memory (the coordinator streams to a file)."""
    if fmt not in WRITERS:
        raise ValueError(f"unsupported format {fmt!r}: choose one of {', '.join(WRITERS)}")
    out = io.BytesIO()
    write_mesh(read_mesh(data, limits or GlbLimits()), fmt, out)
    return out.getvalue()
