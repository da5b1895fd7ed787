"""A mesh made ready for 3D printing: watertight where that is possible.

Slicers want a closed, consistently wound surface. The repair merges vertices
that sit at the same place (seams where colours or normals split them), drops
triangles without area and duplicates, makes the winding consistent, closes
each hole whose edge is a simple loop with a fan of triangles, and turns the
surface outward. Whatever is left open or non-manifold (an edge shared by three
faces, a boundary that touches itself) is not guessed at: the result says the
mesh is not watertight, and the job page says so.

Cost: linear in the faces (plus trimesh's sort-based merges); the caller keeps
the mesh within ``protocol.limits.MAX_PRINT_FACES``. Pure: no coordinator imports.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import trimesh
from numpy.typing import NDArray

from coordinator.meshes.glb import Mesh

# Vertices closer than this (in units of the model's size) are one vertex.
MERGE_DIGITS = 6
# trimesh leaves this one unannotated.
_fix_winding = cast(Callable[[trimesh.Trimesh], None], trimesh.repair.fix_winding)


@dataclass(frozen=True)
class PrintReport:
    """What the repair did and whether the surface is closed now."""

    watertight: bool
    holes_closed: int
    holes_left: int  # boundary loops the repair could not close
    vertices_merged: int  # merged with a twin at the same place, or used by no face
    faces_removed: int  # degenerate or duplicate
    faces: int  # of the repaired mesh


def make_printable(mesh: Mesh) -> tuple[Mesh, PrintReport]:
    """The repaired mesh (positions and faces only; y-up like the input) and a report."""
    tm = trimesh.Trimesh(
        vertices=np.asarray(mesh.positions, np.float64), faces=mesh.faces, process=False
    )
    n_vertices, n_faces = len(tm.vertices), len(tm.faces)
    tm.merge_vertices(merge_tex=True, merge_norm=True, digits_vertex=MERGE_DIGITS)
    merged = n_vertices - len(tm.vertices)
    keep = tm.nondegenerate_faces() & _first_of_each(tm.faces)
    tm.update_faces(keep)
    tm.remove_unreferenced_vertices()
    removed = n_faces - len(tm.faces)
    _fix_winding(tm)
    closed, left = _close_holes(tm)
    if closed:
        _fix_winding(tm)
    watertight = bool(tm.is_watertight and tm.is_winding_consistent)
    if watertight:
        trimesh.repair.fix_inversion(tm)  # outward: a signed volume needs a closed surface
    repaired = Mesh(
        positions=np.asarray(tm.vertices, np.float32),
        faces=np.asarray(tm.faces, np.uint32),
    )
    report = PrintReport(watertight, closed, left, merged, removed, len(repaired.faces))
    return repaired, report


def _first_of_each(faces: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which faces to keep of those over the same three vertices: the first of
    copies wound alike, none of a face paired with its reverse (a zero-thickness
    fin, which decimation leaves behind and which no solid has)."""
    key = np.sort(faces, axis=1)
    _, first, inverse, counts = np.unique(
        key, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    mask = np.zeros(len(faces), bool)
    mask[first] = True
    repeated = np.nonzero(counts[inverse] > 1)[0]
    if len(repeated):
        parity = _parity(faces[repeated])  # which way round each copy is wound
        groups: dict[int, set[bool]] = defaultdict(set)
        for group, p in zip(inverse[repeated].tolist(), parity.tolist(), strict=True):
            groups[group].add(p)
        fins = np.array([len(groups[g]) > 1 for g in inverse[repeated].tolist()])
        mask[repeated[fins]] = False
    return mask


def _parity(faces: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True for faces whose vertex order is an odd permutation of the sorted order."""
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    inversions = (a > b).astype(np.int64) + (a > c) + (b > c)
    odd: NDArray[np.bool_] = inversions % 2 == 1
    return odd


def _close_holes(tm: trimesh.Trimesh) -> tuple[int, int]:
    """Fan-fill every hole whose boundary is a simple loop; (closed, left open)."""
    faces = np.asarray(tm.faces, np.int64)
    if len(faces) == 0:
        return 0, 0
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    boundary = directed[counts[inverse.ravel()] == 1]
    if len(boundary) == 0:
        return 0, 0
    following: dict[int, list[int]] = defaultdict(list)
    for a, b in boundary.tolist():
        following[a].append(b)
    loops, left = _loops(following)
    positions = np.asarray(tm.vertices, np.float64)
    new_vertices: list[NDArray[np.float64]] = []
    new_faces: list[list[int]] = []
    for loop in loops:
        if len(loop) == 3:
            new_faces.append([loop[2], loop[1], loop[0]])
            continue
        centre = len(positions) + len(new_vertices)
        new_vertices.append(positions[loop].mean(axis=0))
        # Boundary edges run a→b in the faces beside them; the cap runs b→a.
        for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
            new_faces.append([b, a, centre])
    if new_faces:
        vertices = np.vstack([positions, *new_vertices]) if new_vertices else positions
        tm.vertices = vertices
        tm.faces = np.vstack([faces, np.asarray(new_faces, np.int64)])
    return len(loops), left


def _loops(following: dict[int, list[int]]) -> tuple[list[list[int]], int]:
    """Boundary edges chained into simple closed loops (each edge used once), and how
    many chains did not close. Where holes touch at a vertex, the walk comes back to
    a vertex it passed: the part since then is a loop of its own (a fan over a loop
    that visits a vertex twice would use an edge four times)."""
    loops: list[list[int]] = []
    left = 0
    for start in list(following):
        while following.get(start):
            path, index = [start], {start: 0}
            at = following[start].pop()
            while True:
                if at in index:  # closed a loop: cut it off, walk on from there
                    i = index[at]
                    loop = path[i:]
                    if len(loop) >= 3:
                        loops.append(loop)
                    else:
                        left += 1
                    for v in loop[1:]:
                        del index[v]
                    del path[i + 1 :]
                    if at == start and len(path) == 1:
                        break
                else:
                    index[at] = len(path)
                    path.append(at)
                if not following.get(at):
                    if len(path) > 1:
                        left += 1  # a boundary that ends: a non-manifold edge
                    break
                at = following[at].pop()
    return loops, left
