"""Decimation to a face budget: the count, the surface and the colours survive."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from meshkit import decimate
from protocol.limits import FACE_TOLERANCE


def coloured_sphere(subdivisions: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    colors = (mesh.vertices + 1.0) / 2.0  # colour = position: easy to check after merging
    return np.asarray(mesh.vertices), np.asarray(mesh.faces), colors


@pytest.mark.parametrize("target", [500, 2_000, 10_000])
def test_decimate_reaches_the_target_within_tolerance(target: int) -> None:
    v, f, c = coloured_sphere()
    out = decimate(v, f, c, target)
    assert out.faces_before == len(f) == 20_480
    assert target * (1 - 0.1) <= len(out.faces) <= target * (1 + FACE_TOLERANCE)
    assert out.changed


def test_decimate_keeps_a_valid_closed_surface() -> None:
    v, f, c = coloured_sphere()
    out = decimate(v, f, c, 1_000)
    mesh = trimesh.Trimesh(out.positions, out.faces, process=False)
    assert out.faces.max() < len(out.positions)
    assert np.all(np.isfinite(out.positions))
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(4 / 3 * np.pi, rel=0.05)  # still the unit sphere


def test_decimate_keeps_colours_by_averaging_merged_vertices() -> None:
    v, f, c = coloured_sphere()
    out = decimate(v, f, c, 1_000)
    assert out.colors is not None and out.colors.shape == (len(out.positions), 3)
    # Each kept vertex's colour is the mean of the nearby vertices it absorbed: close
    # to the colour its own position would have, never some far-away vertex's.
    expected = (out.positions + 1.0) / 2.0
    assert np.abs(out.colors - expected).max() < 0.1
    assert out.colors.min() >= 0.0 and out.colors.max() <= 1.0


def test_decimate_leaves_a_mesh_under_its_target_unchanged() -> None:
    v, f, c = coloured_sphere(2)
    out = decimate(v, f, c, 10_000)
    assert not out.changed
    assert np.array_equal(out.faces, f) and np.allclose(out.positions, v)


def test_decimate_works_without_colours() -> None:
    v, f, _ = coloured_sphere(3)
    out = decimate(v, f, None, 300)
    assert out.colors is None and len(out.faces) <= 300 * (1 + FACE_TOLERANCE)


@pytest.mark.parametrize(
    ("positions", "faces", "colors", "target", "message"),
    [
        (np.zeros((3, 3)), np.array([[0, 1, 2]]), None, 0, "positive face count"),
        (np.zeros((3, 2)), np.array([[0, 1, 2]]), None, 10, "bad mesh shapes"),
        (np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((2, 3)), 10, "2 colours for 3"),
    ],
)
def test_decimate_refuses_bad_input(
    positions: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, target: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decimate(positions, faces, colors, target)
