from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import trimesh

from agent.export import mesh_to_glb
from coordinator.meshes.convert import FORMATS, GlbInfo, InvalidModelError, convert_glb, inspect_glb

LIMIT = 10_000_000


@pytest.fixture(scope="module")
def glb() -> bytes:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    colors = np.clip((sphere.vertices + 1) / 2, 0, 1)
    return mesh_to_glb(sphere.vertices, sphere.faces, colors)


def rebuild(doc: dict, binary: bytes) -> bytes:
    """Assemble a GLB from a JSON document and a binary chunk."""
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    body += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + n])
    return doc, data[20 + n + 8 :]


def test_inspect_glb_counts_geometry(glb: bytes) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    info = inspect_glb(glb, LIMIT)
    assert info == GlbInfo(vertices=len(sphere.vertices), faces=len(sphere.faces), has_colors=True)


def test_inspect_glb_accepts_trimesh_export_without_colours() -> None:
    data = trimesh.creation.box().export(file_type="glb")
    assert inspect_glb(data, LIMIT) == GlbInfo(vertices=8, faces=12, has_colors=False)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda d: d[: len(d) // 2], "header says"),
        (lambda d: d[:10], "too short"),
        (lambda d: b"", "too short"),
        (lambda d: b"PK\x03\x04" + d[4:], "bad magic"),
        (lambda d: d[:4] + struct.pack("<I", 1) + d[8:], "version"),
        (lambda d: d + b"\0\0\0\0", "header says"),
        (lambda d: bytes(64), "bad magic"),
        (lambda d: d[:20] + b"{not json" + d[29:], "does not parse"),
    ],
)
def test_inspect_glb_rejects_broken_files(glb: bytes, mangle: object, reason: str) -> None:
    with pytest.raises(InvalidModelError, match=reason):
        inspect_glb(mangle(glb), LIMIT)  # type: ignore[operator]


def test_inspect_glb_rejects_oversized(glb: bytes) -> None:
    with pytest.raises(InvalidModelError, match="limit"):
        inspect_glb(glb, len(glb) - 1)


def test_inspect_glb_rejects_zero_meshes(glb: bytes) -> None:
    doc, binary = split(glb)
    doc["meshes"] = []
    doc["nodes"] = [{}]
    with pytest.raises(InvalidModelError, match="no meshes"):
        inspect_glb(rebuild(doc, binary), LIMIT)


def test_inspect_glb_rejects_accessor_past_the_end(glb: bytes) -> None:
    doc, binary = split(glb)
    doc["accessors"][1]["count"] *= 10
    with pytest.raises(InvalidModelError, match=r"past the end|count differs"):
        inspect_glb(rebuild(doc, binary), LIMIT)


def test_inspect_glb_rejects_external_buffers(glb: bytes) -> None:
    doc, binary = split(glb)
    doc["buffers"][0]["uri"] = "file:///etc/passwd"
    with pytest.raises(InvalidModelError, match="external"):
        inspect_glb(rebuild(doc, binary), LIMIT)


def test_inspect_glb_rejects_points(glb: bytes) -> None:
    doc, binary = split(glb)
    doc["meshes"][0]["primitives"][0]["mode"] = 0
    with pytest.raises(InvalidModelError, match="triangle"):
        inspect_glb(rebuild(doc, binary), LIMIT)


def test_inspect_glb_rejects_indices_out_of_range(glb: bytes) -> None:
    doc, binary = split(glb)
    start = doc["bufferViews"][0].get("byteOffset", 0)
    binary = binary[:start] + struct.pack("<I", 10**6) + binary[start + 4 :]
    with pytest.raises(InvalidModelError):
        inspect_glb(rebuild(doc, binary), LIMIT)


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_convert_glb_keeps_vertex_colours(glb: bytes, fmt: str) -> None:
    out = convert_glb(glb, fmt)  # type: ignore[arg-type]
    mesh = trimesh.load(io.BytesIO(out), file_type=fmt, process=False)
    assert len(mesh.faces) == inspect_glb(glb, LIMIT).faces
    assert mesh.visual.kind == "vertex"
    assert len(np.unique(mesh.visual.vertex_colors, axis=0)) > 10


def test_convert_glb_stl_is_z_up_and_closed(glb: bytes) -> None:
    cone = trimesh.creation.cone(radius=0.2, height=1.0)  # tall along z, as Shap-E makes it
    data = mesh_to_glb(cone.vertices, cone.faces, np.full((len(cone.vertices), 3), 0.5))
    mesh = trimesh.load(io.BytesIO(convert_glb(data, "stl")), file_type="stl")
    assert np.argmax(np.ptp(mesh.vertices, axis=0)) == 2
    assert mesh.is_watertight and mesh.volume > 0


def test_convert_glb_rejects_unknown_format(glb: bytes) -> None:
    with pytest.raises(ValueError, match="unsupported format"):
        convert_glb(glb, "fbx")  # type: ignore[arg-type]


def test_convert_glb_rejects_garbage() -> None:
    with pytest.raises(InvalidModelError):
        convert_glb(b"garbage" * 10, "obj")


def test_formats_have_extension_and_content_type() -> None:
    assert set(FORMATS) == {"glb", "obj", "stl", "ply", "meshopt"}
    for name, fmt in FORMATS.items():
        assert fmt.extension.endswith("." + name.replace("meshopt", "glb"))
        assert "/" in fmt.content_type
