from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from diffusers.pipelines.shap_e.renderer import MeshDecoder

from agent.mctables import (
    EDGES,
    FACES,
    build_tables,
    case_triangles,
    corner_position,
    face_segments,
)


@pytest.fixture(scope="module")
def decoder() -> MeshDecoder:
    decoder = MeshDecoder()
    cases, masks = build_tables()
    decoder.cases.copy_(torch.from_numpy(cases))
    decoder.masks.copy_(torch.from_numpy(masks))
    return decoder


def run_mc(decoder: MeshDecoder, field: torch.Tensor) -> trimesh.Trimesh:
    out = decoder(field, torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([2.0, 2.0, 2.0]))
    return trimesh.Trimesh(out.verts.numpy(), out.faces.numpy(), process=False)


def test_tables_match_decoder_buffers() -> None:
    cases, masks = build_tables()
    reference = MeshDecoder()
    assert cases.shape == tuple(reference.cases.shape) and cases.dtype == np.int64
    assert masks.shape == tuple(reference.masks.shape) and masks.dtype == np.bool_
    assert cases.min() >= 0 and cases.max() <= 11


def test_edges_join_neighbouring_corners() -> None:
    for a, b in EDGES:
        diff = np.subtract(corner_position(b), corner_position(a))
        assert sorted(diff.tolist()) == [0, 0, 1]


def test_faces_wind_counter_clockwise_from_outside() -> None:
    for face in FACES:
        p = np.array([corner_position(c) for c in face], dtype=float)
        normal = np.cross(p[1] - p[0], p[2] - p[1])
        assert np.dot(normal, p.mean(axis=0) - 0.5) > 0


def test_tables_uniform_cases_have_no_triangles() -> None:
    _, masks = build_tables()
    assert not masks[0].any() and not masks[255].any()
    assert all(masks[c].any() for c in range(1, 255))


def test_tables_masks_are_prefixes() -> None:
    _, masks = build_tables()
    counts = masks.sum(axis=1)
    assert all(masks[c, : counts[c]].all() for c in range(256))


@pytest.mark.parametrize("case", range(256))
def test_case_triangles_use_only_sign_change_edges(case: int) -> None:
    inside = [bool(case >> c & 1) for c in range(8)]
    crossing = {e for e, (a, b) in enumerate(EDGES) if inside[a] != inside[b]}
    used = {e for tri in case_triangles(case) for e in tri}
    assert used == crossing  # every crossing gets a vertex, nothing else does


@pytest.mark.parametrize("case", range(256))
def test_case_boundary_is_the_face_segments(case: int) -> None:
    # Directed edges used once form the patch's boundary: they must be exactly the
    # face segments, in the same direction, or neighbouring cubes would not stitch.
    directed: dict[tuple[int, int], int] = {}
    for a, b, c in case_triangles(case):
        for edge in ((a, b), (b, c), (c, a)):
            directed[edge] = directed.get(edge, 0) + 1
    boundary = {e for e, n in directed.items() if (e[1], e[0]) not in directed}
    assert all(n == 1 for n in directed.values())
    assert boundary == set(face_segments(case))


def test_sphere_is_closed_and_outward(decoder: MeshDecoder) -> None:
    g = torch.linspace(-1, 1, 24)
    x, y, z = torch.meshgrid(g, g, g, indexing="ij")
    mesh = run_mc(decoder, 0.7 - torch.sqrt(x**2 + y**2 + (1.3 * z) ** 2))
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2
    expected = 4 / 3 * np.pi * 0.7**3 / 1.3
    assert mesh.volume == pytest.approx(expected, rel=0.05)  # positive: normals point out


def test_two_spheres_give_two_components(decoder: MeshDecoder) -> None:
    g = torch.linspace(-1, 1, 24)
    x, y, z = torch.meshgrid(g, g, g, indexing="ij")
    field = torch.maximum(
        0.3 - torch.sqrt((x - 0.5) ** 2 + y**2 + z**2),
        0.3 - torch.sqrt((x + 0.5) ** 2 + y**2 + z**2),
    )
    mesh = run_mc(decoder, field)
    assert mesh.is_watertight and len(mesh.split(only_watertight=True)) == 2


@pytest.mark.parametrize("seed", range(8))
def test_random_fields_are_watertight(decoder: MeshDecoder, seed: int) -> None:
    # Noise exercises every case, ambiguous faces included; the negative border
    # closes the surface the way Shap-E's decoder does.
    field = torch.randn(12, 12, 12, generator=torch.Generator().manual_seed(seed))
    field[[0, -1]] = field[:, [0, -1]] = field[:, :, [0, -1]] = -1.0
    mesh = run_mc(decoder, field)
    assert len(mesh.faces) > 0
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0
