"""Marching-cubes lookup tables derived from cube topology.

diffusers' ``MeshDecoder`` carries its case table as two buffers that only the
real Shap-E checkpoint fills; a randomly initialised renderer has all-zero
tables and cannot produce a mesh. Rather than pasting a published table we
derive one here, in the layout the decoder indexes:

* corner ``c`` of a cube sits at ``(c & 1, c >> 1 & 1, c >> 2 & 1)`` (x, y, z),
  matching how ``MeshDecoder.forward`` packs ``field > 0`` into a bitmask;
* edge numbering follows ``_create_flat_edge_indices``: edges 0-3 span x,
  4-7 span y, 8-11 span z;
* ``cases`` is ``(256, 5, 3)`` edge indices, ``masks`` ``(256, 5)`` marks the
  triangles actually used.

The field is positive inside the shape. On each cube face the crossing points
are joined by segments; on an ambiguous face (diagonal corners inside) the
inside corners are always kept apart. That rule depends only on the face's own
four signs, which both neighbouring cubes see identically, so the surface is
watertight across cubes. Segments are oriented so that every polygon winds
counter-clockwise when seen from the outside (negative) region, which gives
outward-facing triangle normals after a fan triangulation.
"""

from __future__ import annotations

import numpy as np

MAX_TRIANGLES = 5

# (corner a, corner b) for each of the 12 edges, in the decoder's numbering.
EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (2, 3), (4, 5), (6, 7),  # along x at (y, z) = 00, 10, 01, 11
    (0, 2), (1, 3), (4, 6), (5, 7),  # along y at (x, z) = 00, 10, 01, 11
    (0, 4), (1, 5), (2, 6), (3, 7),  # along z at (x, y) = 00, 10, 01, 11
)  # fmt: skip


def corner_position(corner: int) -> tuple[int, int, int]:
    return (corner & 1, (corner >> 1) & 1, (corner >> 2) & 1)


def _edge_between(a: int, b: int) -> int:
    return EDGES.index((min(a, b), max(a, b)))


def _faces() -> list[tuple[int, int, int, int]]:
    """The six faces as corner loops, counter-clockwise seen from outside the cube."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            corners = [c for c in range(8) if corner_position(c)[axis] == side]
            # Order the four corners around the face centre, then fix the
            # direction from the outward normal rather than trusting a hand list.
            u, v = [a for a in range(3) if a != axis]
            centre = np.array([0.5, 0.5, 0.5])
            corners.sort(
                key=lambda c: np.arctan2(corner_position(c)[v] - 0.5, corner_position(c)[u] - 0.5)
            )
            p = [np.array(corner_position(c), dtype=float) for c in corners]
            normal = np.cross(p[1] - p[0], p[2] - p[1])
            outward = np.array(corner_position(corners[0]), dtype=float) - centre
            outward[[u, v]] = 0.0
            if float(np.dot(normal, outward)) < 0:
                corners.reverse()
            faces.append((corners[0], corners[1], corners[2], corners[3]))
    return faces


FACES: tuple[tuple[int, int, int, int], ...] = tuple(_faces())


def face_segments(case: int) -> list[tuple[int, int]]:
    """Directed (from_edge, to_edge) segments the surface leaves on the cube's faces."""
    inside = [bool(case >> c & 1) for c in range(8)]
    segments: list[tuple[int, int]] = []
    for face in FACES:
        # Walk the face boundary counter-clockwise, recording where it enters
        # the inside region and where it leaves it.
        crossings: list[tuple[str, int]] = []
        for i in range(4):
            a, b = face[i], face[(i + 1) % 4]
            if inside[a] != inside[b]:
                kind = "enter" if inside[b] else "leave"
                crossings.append((kind, _edge_between(a, b)))
        # Pair each entry with the next exit along the boundary: this keeps the
        # inside corners of an ambiguous face apart.
        for i, (kind, edge) in enumerate(crossings):
            if kind == "enter":
                nxt_kind, nxt_edge = crossings[(i + 1) % len(crossings)]
                assert nxt_kind == "leave"
                # Seen from outside the cube this runs clockwise around the inside
                # corners; chained over faces it forms loops that wind
                # counter-clockwise seen from the outside region.
                segments.append((edge, nxt_edge))
    return segments


def case_polygons(case: int) -> list[list[int]]:
    """Closed loops of edge indices: each is one polygon of the surface in the cube."""
    successor: dict[int, int] = {}
    for start, end in face_segments(case):
        assert start not in successor, "each crossing point starts exactly one segment"
        successor[start] = end
    loops: list[list[int]] = []
    while successor:
        first = min(successor)
        loop = [first]
        nxt = successor.pop(first)
        while nxt != first:
            loop.append(nxt)
            nxt = successor.pop(nxt)
        loops.append(loop)
    return loops


def _ambiguous_pairs(case: int) -> set[frozenset[int]]:
    """Pairs of crossing edges that share an ambiguous face but no segment.

    A diagonal between two such points lies in the face plane, where the cube on
    the other side may draw the same diagonal: the edge would then belong to four
    triangles. Triangulations avoid these pairs.
    """
    inside = [bool(case >> c & 1) for c in range(8)]
    pairs: set[frozenset[int]] = set()
    for face in FACES:
        edges = [
            _edge_between(face[i], face[(i + 1) % 4])
            for i in range(4)
            if inside[face[i]] != inside[face[(i + 1) % 4]]
        ]
        if len(edges) == 4:
            pairs |= {frozenset((a, b)) for a in edges for b in edges if a != b}
    return pairs


def _triangulate(
    loop: list[int], forbidden: set[frozenset[int]]
) -> list[tuple[int, int, int]] | None:
    """First triangulation of a polygon whose diagonals avoid ``forbidden``."""
    if len(loop) < 3:
        return []
    first, last = loop[0], loop[-1]
    # The triangle on side (last, first) has some apex k; the rest splits into
    # two smaller polygons. Winding order of the loop is preserved.
    for k in range(1, len(loop) - 1):
        apex = loop[k]
        diagonals = []
        if k > 1:
            diagonals.append(frozenset((first, apex)))
        if k < len(loop) - 2:
            diagonals.append(frozenset((apex, last)))
        if any(d in forbidden for d in diagonals):
            continue
        left = _triangulate(loop[: k + 1], forbidden)
        right = _triangulate(loop[k:], forbidden)
        if left is not None and right is not None:
            return [*left, *right, (first, apex, last)]
    return None


def case_triangles(case: int) -> list[tuple[int, int, int]]:
    """Triangulate each polygon of ``case`` (winding preserved)."""
    forbidden = _ambiguous_pairs(case)
    tris: list[tuple[int, int, int]] = []
    for loop in case_polygons(case):
        found = _triangulate(loop, forbidden)
        if found is None:
            raise AssertionError(f"case {case}: no triangulation avoids face diagonals")
        tris.extend(found)
    return tris


def build_tables() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cases, masks)`` shaped ``(256, 5, 3)`` int64 and ``(256, 5)`` bool."""
    cases = np.zeros((256, MAX_TRIANGLES, 3), dtype=np.int64)
    masks = np.zeros((256, MAX_TRIANGLES), dtype=bool)
    for case in range(256):
        tris = case_triangles(case)
        if len(tris) > MAX_TRIANGLES:
            raise AssertionError(f"case {case} needs {len(tris)} triangles")
        for i, tri in enumerate(tris):
            cases[case, i] = tri
            masks[case, i] = True
    return cases, masks
