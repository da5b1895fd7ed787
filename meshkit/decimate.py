"""Decimation to a face budget that keeps per-vertex colours.

fast-simplification (quadric error metrics) removes faces; replaying its
collapses tells which original vertices each kept vertex absorbed, so a kept
vertex's colour is the mean of the colours it absorbed rather than whatever
colour one survivor happened to have.
"""

from __future__ import annotations

from dataclasses import dataclass

import fast_simplification
import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class Decimated:
    positions: NDArray[np.float32]  # (n, 3)
    faces: NDArray[np.uint32]  # (f, 3)
    colors: NDArray[np.float32] | None  # (n, c), or None if the input had none
    faces_before: int

    @property
    def changed(self) -> bool:
        return len(self.faces) != self.faces_before


def decimate(
    positions: ArrayLike, faces: ArrayLike, colors: ArrayLike | None, target: int
) -> Decimated:
    """The mesh with about ``target`` faces (at most), colours averaged over merged
    vertices; a mesh already at or under ``target`` comes back unchanged."""
    if target < 1:
        raise ValueError(f"target must be a positive face count, not {target}")
    v = np.asarray(positions, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    c = None if colors is None else np.asarray(colors, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"bad mesh shapes: positions {v.shape}, faces {f.shape}")
    if c is not None and len(c) != len(v):
        raise ValueError(f"{len(c)} colours for {len(v)} vertices")
    before = len(f)
    if before <= target:
        return Decimated(v.astype(np.float32), f.astype(np.uint32), _f32(c), before)
    _, _, collapses = fast_simplification.simplify(
        v, f.astype(np.int32), target_count=target, return_collapses=True
    )
    new_v, new_f, mapping = fast_simplification.replay_simplification(v, f, collapses)
    new_f = np.asarray(new_f, dtype=np.int64)
    # Collapses can leave triangles that repeat a vertex: no area, only trouble.
    new_f = new_f[(new_f[:, 0] != new_f[:, 1]) & (new_f[:, 1] != new_f[:, 2])]
    new_f = new_f[new_f[:, 0] != new_f[:, 2]]
    new_c = None
    if c is not None:
        mapping = np.asarray(mapping, dtype=np.int64)
        kept = mapping >= 0
        sums = np.zeros((len(new_v), c.shape[1]))
        counts = np.zeros(len(new_v))
        np.add.at(sums, mapping[kept], c[kept])
        np.add.at(counts, mapping[kept], 1.0)
        new_c = sums / np.maximum(counts, 1.0)[:, None]
    return Decimated(
        np.asarray(new_v, dtype=np.float32), new_f.astype(np.uint32), _f32(new_c), before
    )


def _f32(c: NDArray[np.float64] | None) -> NDArray[np.float32] | None:
    return None if c is None else c.astype(np.float32)
