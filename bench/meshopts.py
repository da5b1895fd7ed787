"""Mesh options on generated models: decimation and the printable repair, timed.

Called by ``python -m bench.generate --mesh-targets original,80000,20000,5000``:
the generator makes ``--mesh-models`` models at full detail, then for each target
face count this module times what an agent does (``meshkit.decimate``, as
``agent.export`` runs it) and what the coordinator does for a job "for 3D
printing" (``coordinator.meshes.printable.make_printable``), and counts how many
repaired models are watertight. The table goes to docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.meshes.glb import Mesh, read_mesh
from coordinator.meshes.glbcheck import GlbLimits
from coordinator.meshes.printable import make_printable
from meshkit import decimate
from protocol.limits import FACE_PRESETS, MAX_PRINT_FACES, face_budget


@dataclass(frozen=True)
class MeshRow:
    target: str
    models: int
    faces_before: float  # mean over the models
    faces_after: float
    decimate_ms: float  # mean; 0 where nothing was decimated
    repair_ms: float
    watertight_before: int  # models closed straight out of the generator/decimation
    watertight_after: int  # models closed after the printable repair


def parse_targets(text: str) -> list[int | None]:
    """``original,80000,low`` → [None, 80000, 5000]; ValueError names a bad item."""
    targets: list[int | None] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "original":
            targets.append(None)
        elif item in FACE_PRESETS:
            targets.append(FACE_PRESETS[item])
        elif item.isdigit():
            targets.append(int(item))
        else:
            raise ValueError(f"mesh target {item!r}: use original, low, medium, high or a number")
    return targets


def _closed(mesh: Mesh) -> bool:
    import trimesh

    tm = trimesh.Trimesh(mesh.positions, mesh.faces, process=True)  # merged like a slicer
    return bool(tm.is_watertight)


def measure(glbs: Sequence[bytes], targets: Sequence[int | None]) -> list[MeshRow]:
    """One row per target over all models (each decoded once)."""
    meshes = [read_mesh(glb, GlbLimits()) for glb in glbs]
    rows = []
    for target in targets:
        budget = face_budget(target, printable=True)  # what a printable job gets
        before, after, dec_ms, rep_ms, closed, repaired_closed = [], [], [], [], 0, 0
        for mesh in meshes:
            before.append(len(mesh.faces))
            work = mesh
            start = time.perf_counter()
            if budget is not None and len(mesh.faces) > budget:
                small = decimate(mesh.positions, mesh.faces, mesh.colors, budget)
                work = Mesh(small.positions, small.faces, None, small.colors)
            dec_ms.append((time.perf_counter() - start) * 1000)
            after.append(len(work.faces))
            closed += _closed(work)
            start = time.perf_counter()
            _, report = make_printable(work)
            rep_ms.append((time.perf_counter() - start) * 1000)
            repaired_closed += report.watertight
        label = "original" if target is None else f"{target:,}"
        if target is None:
            label += f" (printable cap {MAX_PRINT_FACES:,})"
        rows.append(
            MeshRow(
                label,
                len(meshes),
                statistics.fmean(before),
                statistics.fmean(after),
                statistics.fmean(dec_ms),
                statistics.fmean(rep_ms),
                closed,
                repaired_closed,
            )
        )
    return rows


def markdown(rows: Sequence[MeshRow], what: str) -> str:
    lines = [
        f"{what}. Decimation as the agent runs it (`meshkit.decimate`, fast-simplification, "
        "colours averaged); repair as the coordinator runs it once per printable result "
        "(`coordinator/meshes/printable.py`). Watertight: edges each shared by exactly two "
        "faces after merging coincident vertices (as a slicer loads an STL).",
        "",
        "| target faces | models | faces before | faces after | decimate ms/model "
        "| repair ms/model | watertight as made | watertight after repair |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.models} | {r.faces_before:,.0f} | {r.faces_after:,.0f} "
            f"| {r.decimate_ms:.1f} | {r.repair_ms:.1f} | {r.watertight_before}/{r.models} "
            f"| {r.watertight_after}/{r.models} |"
        )
    return "\n".join(lines) + "\n"
