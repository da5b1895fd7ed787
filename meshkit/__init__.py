"""Mesh operations both the agent and the coordinator run (numpy, fast-simplification).

Neither app imports the other, so what both need lives here: decimation to a
face budget, which a protocol-v3 agent does before uploading and the
coordinator does for older agents, and the vertex normals a decimated mesh
needs (see docs/architecture.md, "Mesh options").
Pure functions over arrays: no I/O, no coordinator or agent imports.
"""

from __future__ import annotations

from meshkit.bounds import bounds
from meshkit.decimate import Decimated, decimate
from meshkit.normals import vertex_normals

__all__ = ["Decimated", "bounds", "decimate", "vertex_normals"]
