"""A received model shaped by its job's mesh options, once, when it is stored.

The agent (protocol v3) decimates before uploading; an older agent never saw
the options, so a model above its job's face budget is decimated here. A job
"for 3D printing" gets its repaired STL made here too, so the job page can say
whether it is watertight and no download request ever repairs anything. Both
costs are bounded: the GLB is within ``GlbLimits`` (checked before any work),
a printable model is cut to ``protocol.limits.MAX_PRINT_FACES`` before its
repair, and all of it happens once per stored result. Pure: no coordinator
imports beyond ``meshes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from coordinator.meshes.convert import write_mesh
from coordinator.meshes.glb import GlbInfo, Mesh, encode_glb, read_mesh
from coordinator.meshes.glbcheck import GlbLimits
from coordinator.meshes.printable import PrintReport, make_printable
from meshkit import decimate, vertex_normals
from protocol import MeshOptions
from protocol.limits import MAX_PRINT_FACES, face_budget, over_budget


@dataclass(frozen=True)
class MeshRequest:
    """What a job asks of its mesh (the ``jobs.mesh_*`` columns; the form and the API
    make one through ``coordinator.services.mesh_options``)."""

    target_faces: int | None = None  # decimate to about this many faces; None: as made
    printable: bool = False  # the STL download made watertight where possible

    @property
    def budget(self) -> int | None:
        """The most faces the stored model may have (None: any)."""
        return face_budget(self.target_faces, self.printable)

    @classmethod
    def of_wire(cls, options: MeshOptions | None) -> MeshRequest:
        """The request an ``assign`` carried (None: nothing asked)."""
        if options is None:
            return _NOTHING_ASKED  # frozen: one instance serves every job without options
        return cls(options.target_faces, options.printable)

    @property
    def wire(self) -> MeshOptions | None:
        """The options as agents receive them (None: nothing asked)."""
        if self.target_faces is None and not self.printable:
            return None
        return MeshOptions(self.target_faces, self.printable)


_NOTHING_ASKED = MeshRequest()


@dataclass(frozen=True)
class ShapedModel:
    """The normalised GLB to store, its counts, and what the options made of it."""

    glb: bytes
    info: GlbInfo
    faces_received: int | None  # set when decimated here (the agent did not)
    printable: Mesh | None  # the repaired mesh, for a "for 3D printing" job
    report: PrintReport | None

    def write_stl(self, out: BinaryIO) -> None:
        if self.printable is None:
            raise ValueError("this model was not made printable")
        write_mesh(self.printable, "stl", out)


def shape_model(data: bytes, limits: GlbLimits, request: MeshRequest) -> ShapedModel:
    """Check an untrusted GLB (``InvalidModelError``), decimate it to the job's budget
    if it is over, and repair it for printing if asked."""
    mesh = read_mesh(data, limits)
    received = None
    if request.budget is not None and over_budget(len(mesh.faces), request.budget):
        received = len(mesh.faces)
        mesh = decimated(mesh, request.budget)
    info = GlbInfo(len(mesh.positions), len(mesh.faces), mesh.colors is not None)
    printable, report = make_printable(mesh) if request.printable else (None, None)
    return ShapedModel(encode_glb(mesh), info, received, printable, report)


def decimated(mesh: Mesh, budget: int) -> Mesh:
    """``mesh`` with about ``budget`` faces, colours kept, normals made afresh."""
    small = decimate(mesh.positions, mesh.faces, mesh.colors, budget)
    normals = vertex_normals(small.positions, small.faces) if mesh.normals is not None else None
    return Mesh(small.positions, small.faces, normals, small.colors)


def printable_stl(data: bytes, limits: GlbLimits, out: BinaryIO) -> PrintReport:
    """The repaired STL of a stored (already shaped) GLB, for a cache that lost it."""
    mesh = read_mesh(data, limits)
    if len(mesh.faces) > MAX_PRINT_FACES:  # never, for a model stored through shape_model
        mesh = decimated(mesh, MAX_PRINT_FACES)
    repaired, report = make_printable(mesh)
    write_mesh(repaired, "stl", out)
    return report
