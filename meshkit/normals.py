"""Vertex normals for a triangle mesh."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def vertex_normals(v: NDArray[np.float32], f: NDArray[np.uint32]) -> NDArray[np.float32]:
    """Area-weighted unit vertex normals (glTF requires unit length)."""
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]).astype(np.float64)
    n = np.zeros((len(v), 3))
    for k in range(3):
        np.add.at(n, f[:, k], face_n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    # Vertices used by no face, or only by zero-area ones, get an arbitrary
    # unit normal rather than an invalid zero vector.
    n = np.where(length > 1e-12, n / np.maximum(length, 1e-12), [0.0, 1.0, 0.0])
    return n.astype(np.float32)
