from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pygltflib
import pytest
import trimesh
from PIL import Image

from agent.export import export_mesh, mesh_to_glb, prepare_mesh, render_preview
from agent.pipeline import GenerationError


def z_up_cone() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Tall along z (Shap-E's up axis), off-centre, in odd units.
    mesh = trimesh.creation.cone(radius=1.0, height=4.0, sections=24)
    verts = mesh.vertices * 3.0 + [10.0, -5.0, 2.0]
    colors = np.clip((mesh.vertices - mesh.vertices.min(0)) / np.ptp(mesh.vertices, 0), 0, 1)
    return verts, np.asarray(mesh.faces), colors


def load_glb(data: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(data), file_type="glb", process=False, skip_materials=True)
    return scene.to_geometry()


def test_mesh_to_glb_passes_khronos_validator(
    validate_glb: Callable[[bytes], dict[str, Any]],
) -> None:
    report = validate_glb(mesh_to_glb(*z_up_cone()))
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]


def test_mesh_to_glb_has_color_0_and_normals() -> None:
    gltf = pygltflib.GLTF2.load_from_bytes(mesh_to_glb(*z_up_cone()))
    attrs = gltf.meshes[0].primitives[0].attributes
    assert attrs.COLOR_0 is not None and attrs.NORMAL is not None
    assert gltf.accessors[attrs.COLOR_0].type == "VEC3"


def test_mesh_to_glb_turns_z_up_into_y_up_and_fits_unit_cube() -> None:
    mesh = load_glb(mesh_to_glb(*z_up_cone()))
    lo, hi = mesh.bounds
    assert np.allclose((lo + hi) / 2, 0, atol=1e-6)
    assert np.ptp(mesh.vertices, axis=0).max() == pytest.approx(1.0)
    assert np.argmax(np.ptp(mesh.vertices, axis=0)) == 1  # the tall axis is now y
    # The cone's apex (z max in the input) is at the top (y max) in the output.
    assert mesh.vertices[np.argmax(mesh.vertices[:, 1])][[0, 2]] == pytest.approx([0, 0], abs=0.1)


def test_mesh_to_glb_keeps_outward_winding_and_colours() -> None:
    verts, faces, colors = z_up_cone()
    mesh = load_glb(mesh_to_glb(verts, faces, colors))
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.visual.kind == "vertex"
    got = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(np.sort(got, axis=0) - np.sort(colors, axis=0)).max() < 1 / 255 + 1e-6


def test_mesh_to_glb_drops_degenerate_and_unused() -> None:
    verts, faces, colors = z_up_cone()
    verts = np.vstack([verts, [[99.0, 99.0, 99.0]]])  # unused: must not stretch the bounds
    colors = np.vstack([colors, [[1.0, 0.0, 0.0]]])
    faces = np.vstack([faces, [[0, 0, 1]]])
    mesh = load_glb(mesh_to_glb(verts, faces, colors))
    assert len(mesh.faces) == len(faces) - 1
    assert np.ptp(mesh.vertices, axis=0).max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("verts", "faces", "colors", "message"),
    [
        (np.zeros((0, 3)), np.zeros((0, 3), int), np.zeros((0, 3)), "empty mesh"),
        (np.zeros((3, 3)), np.zeros((0, 3), int), np.zeros((3, 3)), "empty mesh"),
        (np.eye(3), np.array([[0, 1, 3]]), np.zeros((3, 3)), "do not exist"),
        (np.eye(3) * np.nan, np.array([[0, 1, 2]]), np.zeros((3, 3)), "NaN"),
        (np.eye(3), np.array([[0, 1, 2]]), np.zeros((2, 3)), "colours"),
        (np.eye(3), np.array([[0, 0, 2]]), np.zeros((3, 3)), "degenerate"),
        (np.zeros((3, 2)), np.array([[0, 1, 2]]), np.zeros((3, 2)), "shapes"),
    ],
)
def test_mesh_to_glb_rejects_bad_meshes(
    verts: np.ndarray, faces: np.ndarray, colors: np.ndarray, message: str
) -> None:
    with pytest.raises(GenerationError, match=message):
        mesh_to_glb(verts, faces, colors)


def test_prepare_mesh_clips_colours() -> None:
    verts, faces, colors = z_up_cone()
    colors = colors * 3 - 1
    colors[0, 0] = np.nan
    _, _, c = prepare_mesh(verts, faces, colors)
    assert c.min() >= 0 and c.max() <= 1 and not np.isnan(c).any()


def test_render_preview_draws_object_on_transparent_background() -> None:
    png = render_preview(*z_up_cone(), size=96)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (96, 96, 4)
    assert image[0, 0, 3] == 0  # corner is background
    assert image[48, 48, 3] == 255  # centre is the object
    assert 0.1 < (image[..., 3] > 0).mean() < 0.9


def test_render_preview_is_fast_for_dense_meshes() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=6)  # 82k triangles
    colors = np.full((len(sphere.vertices), 3), 0.5)
    start = time.perf_counter()
    render_preview(sphere.vertices, sphere.faces, colors, size=256)
    assert time.perf_counter() - start < 3.0


def test_render_preview_rejects_empty_mesh() -> None:
    with pytest.raises(GenerationError):
        render_preview(np.zeros((0, 3)), np.zeros((0, 3), int), np.zeros((0, 3)))


def test_export_mesh_decimates_to_the_face_budget_and_keeps_colours() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20480 faces
    colors = np.clip((sphere.vertices + 1.0) / 2.0, 0, 1)
    exported = export_mesh(sphere.vertices, sphere.faces, colors, 64, face_budget=2_000)
    assert exported.faces_before == 20_480
    assert 1_800 <= exported.faces <= 2_100
    gltf = pygltflib.GLTF2.load_from_bytes(exported.glb)
    attributes = gltf.meshes[0].primitives[0].attributes
    assert attributes.COLOR_0 is not None
    assert gltf.accessors[attributes.POSITION].count == exported.vertices
    assert load_glb(exported.glb).is_watertight  # decimation kept a closed surface
    assert exported.preview_png is not None  # the preview shows the decimated model


def test_export_mesh_without_a_budget_keeps_every_face() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    exported = export_mesh(sphere.vertices, sphere.faces, np.ones_like(sphere.vertices), 0)
    assert exported.faces == exported.faces_before == len(sphere.faces)
