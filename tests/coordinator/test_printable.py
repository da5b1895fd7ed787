"""The "for 3D printing" repair: holes closed, seams merged, winding outward, and an
honest answer where the surface cannot be closed."""

from __future__ import annotations

import numpy as np
import trimesh

from coordinator.meshes.glb import Mesh
from coordinator.meshes.printable import make_printable


def as_mesh(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    return Mesh(np.asarray(vertices, np.float32), np.asarray(faces, np.uint32))


def check(mesh: Mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.positions, mesh.faces, process=False)


def test_printable_closes_a_hole_and_says_watertight() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    holed = as_mesh(sphere.vertices, sphere.faces[5:])  # five faces gone: a hole
    assert not check(holed).is_watertight
    repaired, report = make_printable(holed)
    result = check(repaired)
    assert report.watertight and report.holes_closed >= 1 and report.holes_left == 0
    assert result.is_watertight and result.is_winding_consistent
    assert result.volume > 0  # outward: a slicer sees a solid, not a void
    assert abs(result.volume - 4 / 3 * np.pi) < 0.3  # the cap follows the sphere


def test_printable_merges_split_seams_and_drops_degenerate_and_duplicate_faces() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    # Every triangle with its own three vertices (as a colour seam would split them),
    # plus a duplicate and a zero-area triangle.
    soup = sphere.vertices[sphere.faces].reshape(-1, 3)
    faces = np.arange(len(soup)).reshape(-1, 3)
    faces = np.vstack([faces, faces[:1], [[0, 0, 1]]])
    repaired, report = make_printable(as_mesh(soup, faces))
    assert report.watertight
    assert report.vertices_merged == len(soup) - len(sphere.vertices)
    assert report.faces_removed == 2
    assert len(repaired.faces) == len(sphere.faces)


def test_printable_turns_an_inside_out_surface_outward() -> None:
    box = trimesh.creation.box()
    repaired, report = make_printable(as_mesh(box.vertices, box.faces[:, ::-1]))
    assert report.watertight and check(repaired).volume > 0


def test_printable_closes_holes_that_touch_at_a_vertex() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4)
    # Many scattered faces removed: holes that share vertices with each other.
    repaired, report = make_printable(as_mesh(sphere.vertices, sphere.faces[200:]))
    assert report.watertight, report
    assert check(repaired).is_watertight


def test_printable_reports_a_hopeless_mesh_as_not_watertight() -> None:
    # Three triangles on one edge (non-manifold) and a lone flap: no closed surface.
    vertices = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [5, 5, 5]]
    faces = [[0, 1, 2], [1, 0, 3], [0, 1, 4]]
    repaired, report = make_printable(as_mesh(vertices, faces))
    assert not report.watertight
    assert not check(repaired).is_watertight
    assert report.holes_left >= 1


def test_printable_leaves_a_closed_mesh_closed() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    repaired, report = make_printable(as_mesh(sphere.vertices, sphere.faces))
    assert report.watertight and report.holes_closed == 0 and report.faces_removed == 0
    assert len(repaired.faces) == len(sphere.faces)


def test_printable_removes_fins_that_decimation_leaves() -> None:
    # A face glued to its own reverse: zero thickness, an edge shared by four faces.
    sphere = trimesh.creation.icosphere(subdivisions=2)
    fin = sphere.faces[:1][:, ::-1]
    repaired, report = make_printable(as_mesh(sphere.vertices, np.vstack([sphere.faces, fin])))
    assert report.watertight and report.faces_removed == 2
    assert check(repaired).is_watertight
    # A hole elsewhere is closed all the same.
    holed = np.vstack([sphere.faces[3:], sphere.faces[1:2][:, ::-1]])
    _, report = make_printable(as_mesh(sphere.vertices, holed))
    assert report.watertight, report
