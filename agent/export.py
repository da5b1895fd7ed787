"""Mesh -> GLB (vertex colours as COLOR_0) and a small CPU-rendered PNG preview."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pygltflib
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from agent.pipeline import GenerationError
from meshkit import bounds, decimate, vertex_normals

# Shap-E meshes are z-up; glTF is y-up. A -90 degree turn about x is a proper
# rotation (det +1), so triangle winding and outward normals survive it.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def prepare_mesh(
    verts: ArrayLike, faces: ArrayLike, colors: ArrayLike
) -> tuple[NDArray[np.float32], NDArray[np.uint32], NDArray[np.float32]]:
    """Check, drop unused vertices, turn y-up, centre, fit the unit cube; clip colours."""
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces)
    c = np.asarray(colors, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise GenerationError(f"mesh arrays have bad shapes: verts {v.shape}, faces {f.shape}")
    if c.shape != v.shape:
        raise GenerationError(f"colours {c.shape} do not match vertices {v.shape}")
    if len(v) == 0 or len(f) == 0:
        raise GenerationError("the model produced an empty mesh (no surface for this prompt/seed)")
    if not np.all(np.isfinite(v)):
        raise GenerationError("mesh vertices contain NaN or infinite values")
    if f.min() < 0 or f.max() >= len(v):
        raise GenerationError("mesh faces index vertices that do not exist")
    f = f.astype(np.uint32)
    # Triangles that repeat a vertex carry no area and only upset viewers.
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    if len(f) == 0:
        raise GenerationError("the model produced a mesh with only degenerate triangles")
    used = np.unique(f)
    if len(used) != len(v):
        # Unreferenced vertices would stretch the bounds used for centring.
        remap = np.zeros(len(v), dtype=np.uint32)
        remap[used] = np.arange(len(used), dtype=np.uint32)
        v, c, f = v[used], c[used], remap[f]
    v = v @ Z_UP_TO_Y_UP.T
    lo, hi = bounds(v)
    extent = float((hi - lo).max())
    v = (v - (lo + hi) / 2) / (extent if extent > 0 else 1.0)
    c = np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)
    return v.astype(np.float32), f, c.astype(np.float32)


@dataclass(frozen=True)
class ExportedMesh:
    glb: bytes
    preview_png: bytes | None
    vertices: int  # as written to the GLB
    faces: int
    faces_before: int = 0  # before decimation (= faces when there was none)


def export_mesh(
    verts: ArrayLike,
    faces: ArrayLike,
    colors: ArrayLike,
    preview_size: int = 256,
    face_budget: int | None = None,
) -> ExportedMesh:
    """GLB plus optional preview (``preview_size`` 0 = none), preparing the mesh once.

    ``face_budget``: decimate to at most about this many faces first (the job's mesh
    options, ``protocol.limits.face_budget``), colours kept; None keeps the mesh."""
    v, f, c = prepare_mesh(verts, faces, colors)
    before = len(f)
    if face_budget is not None and before > face_budget:
        small = decimate(v, f, c, face_budget)
        if len(small.faces) == 0 or small.colors is None:
            raise GenerationError(f"decimating {before} faces to {face_budget} left no surface")
        v, f, c = small.positions, small.faces, small.colors
    preview = render_prepared(v, f, c, size=preview_size) if preview_size > 0 else None
    return ExportedMesh(encode_glb(v, f, c), preview, len(v), len(f), before)


def mesh_to_glb(verts: ArrayLike, faces: ArrayLike, colors: ArrayLike) -> bytes:
    """Encode a vertex-coloured triangle mesh (z-up, linear RGB) as a y-up GLB."""
    return encode_glb(*prepare_mesh(verts, faces, colors))


def encode_glb(v: NDArray[np.float32], f: NDArray[np.uint32], c: NDArray[np.float32]) -> bytes:
    """GLB bytes for a mesh already through ``prepare_mesh``."""
    n = vertex_normals(v, f)
    chunks = [f.astype("<u4").tobytes(), v.astype("<f4").tobytes()]
    chunks += [n.astype("<f4").tobytes(), c.astype("<f4").tobytes()]
    views, offset = [], 0
    for i, chunk in enumerate(chunks):
        target = pygltflib.ELEMENT_ARRAY_BUFFER if i == 0 else pygltflib.ARRAY_BUFFER
        views.append(
            pygltflib.BufferView(buffer=0, byteOffset=offset, byteLength=len(chunk), target=target)
        )
        offset += len(chunk)  # every chunk is a multiple of 4 bytes: no padding needed
    lo, hi = bounds(v)
    accessors = [
        pygltflib.Accessor(
            bufferView=0,
            componentType=pygltflib.UNSIGNED_INT,
            count=f.size,
            type=pygltflib.SCALAR,
            min=[int(f.min())],
            max=[int(f.max())],
        ),
        pygltflib.Accessor(
            bufferView=1,
            componentType=pygltflib.FLOAT,
            count=len(v),
            type=pygltflib.VEC3,
            min=lo.tolist(),
            max=hi.tolist(),
        ),
        pygltflib.Accessor(
            bufferView=2, componentType=pygltflib.FLOAT, count=len(v), type=pygltflib.VEC3
        ),
        pygltflib.Accessor(
            bufferView=3, componentType=pygltflib.FLOAT, count=len(v), type=pygltflib.VEC3
        ),
    ]
    attributes = pygltflib.Attributes(POSITION=1, NORMAL=2, COLOR_0=3)
    material = pygltflib.Material(
        name="vertex-colour",
        pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
            baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=0.8
        ),
    )
    gltf = pygltflib.GLTF2(
        asset=pygltflib.Asset(version="2.0", generator="shapefarm (Shap-E)"),
        scene=0,
        scenes=[pygltflib.Scene(nodes=[0])],
        nodes=[pygltflib.Node(mesh=0, name="shape")],
        meshes=[
            pygltflib.Mesh(
                primitives=[pygltflib.Primitive(attributes=attributes, indices=0, material=0)]
            )
        ],
        materials=[material],
        accessors=accessors,
        bufferViews=views,
        buffers=[pygltflib.Buffer(byteLength=offset)],
    )
    gltf.set_binary_blob(b"".join(chunks))
    return b"".join(gltf.save_to_bytes())


def _linear_to_srgb(c: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def _view_rotation(yaw_deg: float, pitch_deg: float) -> NDArray[np.float64]:
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array(
        [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]
    )
    rotation: NDArray[np.float64] = rx @ ry
    return rotation


def render_preview(
    verts: ArrayLike,
    faces: ArrayLike,
    colors: ArrayLike,
    size: int = 256,
    yaw_deg: float = 35.0,
    pitch_deg: float = 20.0,
) -> bytes:
    """Flat-shaded orthographic view as an RGBA PNG, rasterised with numpy."""
    return render_prepared(*prepare_mesh(verts, faces, colors), size, yaw_deg, pitch_deg)


def render_prepared(
    v: NDArray[np.float32],
    f: NDArray[np.uint32],
    c: NDArray[np.float32],
    size: int = 256,
    yaw_deg: float = 35.0,
    pitch_deg: float = 20.0,
) -> bytes:
    """``render_preview`` for a mesh already through ``prepare_mesh``."""
    view = v.astype(np.float64) @ _view_rotation(yaw_deg, pitch_deg).T
    margin = 0.06 * size
    scale = (size - 2 * margin) / max(float(np.ptp(view[:, :2], axis=0).max()), 1e-9)
    centre = (view[:, :2].max(axis=0) + view[:, :2].min(axis=0)) / 2
    # Screen space: x right, y down; the camera looks along -z (larger z is nearer).
    sx = (view[:, 0] - centre[0]) * scale + size / 2
    sy = (centre[1] - view[:, 1]) * scale + size / 2
    tri_x, tri_y, tri_z = sx[f], sy[f], view[:, 2][f]

    a, b = view[f[:, 1]] - view[f[:, 0]], view[f[:, 2]] - view[f[:, 0]]
    normal = np.cross(a, b)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    light = np.array([0.4, 0.6, 0.7]) / np.linalg.norm([0.4, 0.6, 0.7])
    shade = 0.35 + 0.65 * np.clip(np.abs(normal @ light), 0, 1)
    rgb = _linear_to_srgb(c[f].mean(axis=1).astype(np.float64)) * shade[:, None]

    pix, depth, tri_index = _rasterise(tri_x, tri_y, tri_z, size)
    image = np.zeros((size * size, 4), dtype=np.uint8)
    if len(pix):
        # Nearest fragment per pixel: sort by pixel, then by depth (nearest first).
        order = np.lexsort((-depth, pix))
        pix, tri_index = pix[order], tri_index[order]
        first = np.concatenate(([True], pix[1:] != pix[:-1]))
        image[pix[first], :3] = np.clip(rgb[tri_index[first]] * 255 + 0.5, 0, 255)
        image[pix[first], 3] = 255
    out = io.BytesIO()
    Image.fromarray(image.reshape(size, size, 4), "RGBA").save(out, format="PNG", optimize=False)
    return out.getvalue()


def _rasterise(
    xs: NDArray[np.float64], ys: NDArray[np.float64], zs: NDArray[np.float64], size: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Fragments (pixel, depth, triangle) for pixel centres inside each triangle.

    Triangles are bucketed by bounding-box size so that each bucket tests a
    fixed square of candidate pixels, fully vectorised; the work stays close to
    the covered area even when most triangles are a pixel wide.
    """
    x0 = np.floor(xs.min(axis=1)).astype(np.int64)
    y0 = np.floor(ys.min(axis=1)).astype(np.int64)
    span = np.maximum(np.ceil(xs.max(axis=1)) - x0, np.ceil(ys.max(axis=1)) - y0).astype(np.int64)
    out_pix, out_z, out_tri = [], [], []
    bucket = 1
    while True:
        sel = np.nonzero((span <= bucket) & (span > bucket // 2 if bucket > 1 else True))[0]
        for chunk in np.array_split(sel, max(1, len(sel) * bucket * bucket // 2_000_000 + 1)):
            if len(chunk) == 0:
                continue
            grid = np.arange(bucket + 1)
            px = x0[chunk, None, None] + grid[None, None, :]
            py = y0[chunk, None, None] + grid[None, :, None]
            cx, cy = px + 0.5, py + 0.5
            tx, ty, tz = xs[chunk, :, None, None], ys[chunk, :, None, None], zs[chunk]
            # Barycentric weights via edge functions, for either winding.
            d = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (
                ty[:, 1] - ty[:, 0]
            )
            d = np.where(np.abs(d) < 1e-12, np.nan, d)
            w1 = (
                (cx - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (cy - ty[:, 0])
            ) / d
            w2 = (
                (tx[:, 1] - tx[:, 0]) * (cy - ty[:, 0]) - (cx - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
            ) / d
            w0 = 1 - w1 - w2
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            inside &= (px >= 0) & (px < size) & (py >= 0) & (py < size)
            t_idx, gy, gx = np.nonzero(inside)
            z = (
                w0[t_idx, gy, gx] * tz[t_idx, 0]
                + w1[t_idx, gy, gx] * tz[t_idx, 1]
                + w2[t_idx, gy, gx] * tz[t_idx, 2]
            )
            out_pix.append(py[t_idx, gy, 0] * size + px[t_idx, 0, gx])
            out_z.append(z)
            out_tri.append(chunk[t_idx])
        if bucket >= span.max(initial=0):
            break
        bucket *= 2
    if not out_pix:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(out_pix), np.concatenate(out_z), np.concatenate(out_tri)
