"""Untrusted GLB files: bound their cost from the JSON, then decode and normalise them.

A volunteer agent is untrusted, and a GLB is a small file that can describe a
huge amount of work: accessors that overlap through tiny strides, one mesh
instanced by thousands of nodes, accessors nothing uses. So the JSON alone is
checked first (counts of nodes, accessors and primitives; every byte range an
accessor reads; vertices and faces counted with instancing; the size the model
would decode to), and only then are the accessors that primitives use read,
as numpy views on the binary chunk. What gets stored is a normalised GLB (one
mesh, one primitive, no instancing), so downloads never parse hostile
structure again. Pure functions over bytes: no coordinator imports, no I/O.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
TRIANGLES = 4
FLOAT, UBYTE, USHORT, UINT = 5126, 5121, 5123, 5125
COMPONENTS: dict[int, str] = {
    5120: "<i1",
    5121: "<u1",
    5122: "<i2",
    5123: "<u2",
    5125: "<u4",
    5126: "<f4",
}
TYPE_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
MAX_SCENES = 64


class InvalidModelError(ValueError):
    """The bytes are not a GLB we are willing to store or serve."""


@dataclass(frozen=True)
class GlbLimits:
    """What one model may cost; vertices, faces and primitives count every instance."""

    max_bytes: int = 64 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    max_vertices: int = 4_000_000
    max_faces: int = 4_000_000
    max_nodes: int = 1024
    max_accessors: int = 1024  # also the limit on buffer views and meshes
    max_primitives: int = 4096
    max_depth: int = 32
    # The decoded model may be this many times the file, or ``expansion_floor_bytes``.
    max_expansion: int = 8
    expansion_floor_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class GlbInfo:
    vertices: int
    faces: int
    has_colors: bool


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh, y-up; colours linear RGB(A) in 0..1, as COLOR_0 has them."""

    positions: NDArray[np.float32]  # (n, 3)
    faces: NDArray[np.uint32]  # (f, 3)
    normals: NDArray[np.float32] | None = None  # (n, 3)
    colors: NDArray[np.float32] | None = None  # (n, 3) or (n, 4)


@dataclass(frozen=True)
class _Accessor:
    offset: int  # into the binary chunk
    count: int
    width: int
    dtype: str
    stride: int


@dataclass(frozen=True)
class _Primitive:
    position: _Accessor
    normal: _Accessor | None
    color: _Accessor | None
    indices: _Accessor | None

    @property
    def faces(self) -> int:
        return (self.indices.count if self.indices else self.position.count) // 3


def _fail(message: str) -> InvalidModelError:
    return InvalidModelError(message)


def _split_chunks(data: bytes, max_json: int) -> tuple[dict[str, object], memoryview]:
    if len(data) < 20:
        raise _fail(f"too short for a GLB ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC:
        raise _fail("not a GLB file (bad magic)")
    if version != 2:
        raise _fail(f"unsupported glTF container version {version}")
    if length != len(data):
        raise _fail(f"GLB header says {length} bytes but {len(data)} were given")
    view = memoryview(data)  # slices of a memoryview copy nothing
    chunks: list[tuple[int, memoryview]] = []
    offset = 12
    while offset < len(data):
        if offset + 8 > len(data):
            raise _fail("truncated GLB chunk header")
        size, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + size > len(data):
            raise _fail("truncated GLB chunk")
        chunks.append((kind, view[offset + 8 : offset + 8 + size]))
        offset += 8 + size
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise _fail("GLB does not start with a JSON chunk")
    if len(chunks[0][1]) > max_json:
        # Parsed JSON costs tens of bytes per byte of text: bound it before parsing.
        raise _fail(f"GLB JSON chunk is {len(chunks[0][1])} bytes, over the {max_json}-byte limit")
    try:
        doc = json.loads(bytes(chunks[0][1]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(f"GLB JSON chunk does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise _fail("GLB JSON chunk is not an object")
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == CHUNK_BIN else view[:0]
    return doc, binary


def _items(doc: dict[str, object], key: str, limit: int) -> list[dict[str, object]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _fail(f"GLB field {key!r} is malformed")
    if len(value) > limit:
        raise _fail(f"GLB has {len(value)} {key}, over the limit of {limit}")
    return value


def _int(obj: dict[str, object], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"GLB field {key!r} is not a non-negative integer: {value!r}")
    return value


class _Checker:
    """Checks what the scene uses, from the JSON and the chunk sizes alone."""

    def __init__(self, doc: dict[str, object], binary_len: int, limits: GlbLimits) -> None:
        self.doc, self.binary_len, self.limits = doc, binary_len, limits
        self.accessors = _items(doc, "accessors", limits.max_accessors)
        self.views = _items(doc, "bufferViews", limits.max_accessors)
        self.meshes = _items(doc, "meshes", limits.max_accessors)
        self.nodes = _items(doc, "nodes", limits.max_nodes)
        self._meshes: dict[int, list[_Primitive]] = {}

    def accessor(self, index: object, types: set[str], components: set[int]) -> _Accessor:
        if not isinstance(index, int) or not 0 <= index < len(self.accessors):
            raise _fail(f"primitive refers to missing accessor {index!r}")
        acc = self.accessors[index]
        kind, comp = acc.get("type"), acc.get("componentType")
        if kind not in types or comp not in components:
            raise _fail(f"accessor {index} has type {kind!r}/{comp!r}, expected {sorted(types)}")
        if "sparse" in acc:
            raise _fail(f"accessor {index} is sparse")
        count = _int(acc, "count")
        if not 1 <= count <= 3 * self.limits.max_faces:
            raise _fail(f"accessor {index} has count {count}")
        view_i = acc.get("bufferView")
        if not isinstance(view_i, int) or not 0 <= view_i < len(self.views):
            raise _fail(f"accessor {index} has no buffer view")
        view = self.views[view_i]
        if view.get("buffer") != 0:
            raise _fail(f"buffer view {view_i} is not in the GLB binary chunk")
        dtype = COMPONENTS[int(str(comp))]
        size = np.dtype(dtype).itemsize
        elem = TYPE_WIDTH[str(kind)] * size
        stride = _int(view, "byteStride", elem)
        if "byteStride" in view and not (4 <= stride <= 252 and stride % 4 == 0):
            raise _fail(f"buffer view {view_i} has byteStride {stride} (glTF: 4..252, x4)")
        if stride < elem:
            # Overlapping elements would let a small view describe a huge array.
            raise _fail(f"accessor {index} elements ({elem} bytes) overlap: stride {stride}")
        view_off, view_len = _int(view, "byteOffset", 0), _int(view, "byteLength")
        acc_off = _int(acc, "byteOffset", 0)
        if (view_off + acc_off) % size:
            raise _fail(f"accessor {index} is not aligned to its component size")
        if view_off + view_len > self.binary_len:
            raise _fail(f"buffer view {view_i} reads past the end of the binary chunk")
        if acc_off + stride * (count - 1) + elem > view_len:
            raise _fail(f"accessor {index} reads past the end of its buffer view")
        return _Accessor(view_off + acc_off, count, TYPE_WIDTH[str(kind)], dtype, stride)

    def mesh(self, index: object) -> list[_Primitive]:
        if not isinstance(index, int) or not 0 <= index < len(self.meshes):
            raise _fail(f"node refers to missing mesh {index!r}")
        if index not in self._meshes:
            self._meshes[index] = [self.primitive(p) for p in self._prims(index)]
        return self._meshes[index]

    def _prims(self, index: int) -> list[object]:
        prims = self.meshes[index].get("primitives")
        if not isinstance(prims, list) or not prims:
            raise _fail("GLB mesh has no primitives")
        return prims

    def primitive(self, prim: object) -> _Primitive:
        if not isinstance(prim, dict) or prim.get("mode", TRIANGLES) != TRIANGLES:
            raise _fail("only triangle meshes are accepted")
        attrs = prim.get("attributes")
        if not isinstance(attrs, dict) or "POSITION" not in attrs:
            raise _fail("GLB primitive has no POSITION attribute")
        # Only these are read; other attributes (UVs, targets) are never materialised.
        pos = self.accessor(attrs["POSITION"], {"VEC3"}, {FLOAT})
        normal = color = indices = None
        if "NORMAL" in attrs:
            normal = self.accessor(attrs["NORMAL"], {"VEC3"}, {FLOAT})
        if "COLOR_0" in attrs:
            color = self.accessor(attrs["COLOR_0"], {"VEC3", "VEC4"}, {FLOAT, UBYTE, USHORT})
        for name, acc in (("NORMAL", normal), ("COLOR_0", color)):
            if acc is not None and acc.count != pos.count:
                raise _fail(f"attribute {name} count differs from POSITION")
        if "indices" in prim:
            indices = self.accessor(prim["indices"], {"SCALAR"}, {UBYTE, USHORT, UINT})
            if indices.stride != np.dtype(indices.dtype).itemsize:
                raise _fail("index buffer views may not have a byteStride")
        if (indices.count if indices else pos.count) % 3:
            raise _fail("triangle primitive has a vertex or index count not divisible by 3")
        return _Primitive(pos, normal, color, indices)


def _matrix(node: dict[str, object]) -> NDArray[np.float64]:
    def numbers(key: str, n: int, default: list[float]) -> list[float]:
        value = node.get(key, default)
        if (
            not isinstance(value, list)
            or len(value) != n
            or not all(isinstance(x, int | float) and math.isfinite(x) for x in value)
        ):
            raise _fail(f"node {key} is not {n} finite numbers")
        return [float(x) for x in value]

    if "matrix" in node:
        return np.array(numbers("matrix", 16, []), dtype=np.float64).reshape(4, 4).T
    t = numbers("translation", 3, [0.0, 0.0, 0.0])
    x, y, z, w = numbers("rotation", 4, [0.0, 0.0, 0.0, 1.0])
    s = numbers("scale", 3, [1.0, 1.0, 1.0])
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    out = np.eye(4)
    out[:3, :3] = rot * np.array(s)
    out[:3, 3] = t
    return out


def _instances(check: _Checker) -> list[tuple[list[_Primitive], NDArray[np.float64]]]:
    """Every (mesh, world transform) the scene draws; the node graph must be a forest."""
    nodes, limits = check.nodes, check.limits
    parent = [-1] * len(nodes)
    for i, node in enumerate(nodes):
        children = node.get("children", [])
        if not isinstance(children, list):
            raise _fail(f"node {i} children are malformed")
        for child in children:
            if not isinstance(child, int) or not 0 <= child < len(nodes) or child == i:
                raise _fail(f"node {i} has a bad child {child!r}")
            if parent[child] != -1:
                raise _fail(f"node {child} has more than one parent")
            parent[child] = i
    scenes = _items(check.doc, "scenes", MAX_SCENES)
    roots: object = [i for i, p in enumerate(parent) if p == -1]
    if scenes:
        scene = check.doc.get("scene", 0)
        if not isinstance(scene, int) or not 0 <= scene < len(scenes):
            raise _fail(f"GLB default scene {scene!r} does not exist")
        roots = scenes[scene].get("nodes", [])
    if not isinstance(roots, list) or len(set(map(repr, roots))) != len(roots):
        raise _fail("scene nodes are malformed")
    out: list[tuple[list[_Primitive], NDArray[np.float64]]] = []
    stack: list[tuple[int, NDArray[np.float64], int]] = []
    for root in reversed(roots):  # a stack: draw in scene order, children in node order
        if not isinstance(root, int) or not 0 <= root < len(nodes) or parent[root] != -1:
            raise _fail(f"scene node {root!r} is not a root node")
        stack.append((root, np.eye(4), 1))
    seen = 0
    while stack:
        index, above, depth = stack.pop()
        seen += 1
        if depth > limits.max_depth:
            raise _fail(f"node graph is deeper than {limits.max_depth}")
        node = nodes[index]
        world = above @ _matrix(node)
        if "mesh" in node:
            out.append((check.mesh(node["mesh"]), world))
        children = node.get("children", [])
        assert isinstance(children, list)  # checked above, with every index in range
        stack.extend((c, world, depth + 1) for c in reversed(children))
    if seen < len(nodes) and not scenes:
        raise _fail("node graph has a cycle")
    return out


def _bound(
    check: _Checker, drawn: list[tuple[list[_Primitive], NDArray[np.float64]]], size: int
) -> None:
    limits = check.limits
    prims = [p for mesh, _ in drawn for p in mesh]
    if not prims:
        raise _fail("GLB scene draws no meshes")
    if len(prims) > limits.max_primitives:
        raise _fail(f"GLB draws {len(prims)} primitives, over the limit of {limits.max_primitives}")
    vertices = sum(p.position.count for p in prims)
    faces = sum(p.faces for p in prims)
    if vertices > limits.max_vertices:
        raise _fail(f"GLB has {vertices} vertices (with instancing), over {limits.max_vertices}")
    if faces > limits.max_faces:
        raise _fail(f"GLB has {faces} faces (with instancing), over {limits.max_faces}")
    per_vertex = 12 + (12 if all(p.normal for p in prims) else 0) + 16
    decoded = vertices * per_vertex + faces * 12
    budget = max(limits.max_expansion * size, limits.expansion_floor_bytes)
    if decoded > budget:
        raise _fail(f"GLB would decode to {decoded} bytes, over the {budget}-byte limit")


def _array(binary: memoryview, acc: _Accessor) -> NDArray[np.generic]:
    """A read-only view (no copy) of an accessor checked by ``_Checker.accessor``."""
    item = np.dtype(acc.dtype).itemsize
    shape = (acc.count, acc.width) if acc.width > 1 else (acc.count,)
    strides = (acc.stride, item) if acc.width > 1 else (acc.stride,)
    return np.ndarray(shape, acc.dtype, buffer=binary, offset=acc.offset, strides=strides)


def _colors(binary: memoryview, acc: _Accessor, width: int) -> NDArray[np.float32]:
    raw = _array(binary, acc)
    scale = {"<f4": 1.0, "<u1": 255.0, "<u2": 65535.0}[acc.dtype]
    out = np.ones((acc.count, width), np.float32)
    out[:, : acc.width] = raw[:, :width].astype(np.float32) / np.float32(scale)
    return out


def _assemble(
    binary: memoryview, drawn: list[tuple[list[_Primitive], NDArray[np.float64]]]
) -> Mesh:
    items = [(p, m) for mesh, m in drawn for p in mesh]
    n = sum(p.position.count for p, _ in items)
    f = sum(p.faces for p, _ in items)
    with_normals = all(p.normal for p, _ in items)
    width = 4 if any(p.color and p.color.width == 4 for p, _ in items) else 3
    with_colors = any(p.color for p, _ in items)
    identity = len(items) == 1 and np.array_equal(items[0][1], np.eye(4))
    first = items[0][0]
    if (
        identity
        and first.position.stride == 12
        and (first.indices is None or first.indices.dtype == "<u4")
    ):
        # Already normal form (what our agents send): views, no copies (asarray of an
        # array already of that dtype, as the accessor checks made sure, copies nothing).
        faces = (
            np.asarray(_array(binary, first.indices), np.uint32).reshape(-1, 3)
            if first.indices
            else np.arange(n, dtype=np.uint32).reshape(-1, 3)
        )
        normals = np.asarray(_array(binary, first.normal), np.float32) if first.normal else None
        colors = _colors(binary, first.color, width) if first.color else None
        positions = np.asarray(_array(binary, first.position), np.float32)
        return _checked(Mesh(positions, faces, normals, colors), items)
    pos = np.empty((n, 3), np.float32)
    nrm = np.empty((n, 3), np.float32) if with_normals else None
    col = np.ones((n, width), np.float32) if with_colors else None
    idx = np.empty((f, 3), np.uint32)
    v0 = f0 = 0
    for prim, world in items:
        count, nf = prim.position.count, prim.faces
        m3 = world[:3, :3].astype(np.float32)
        np.matmul(_array(binary, prim.position), m3.T, out=pos[v0 : v0 + count])
        pos[v0 : v0 + count] += world[:3, 3].astype(np.float32)
        if nrm is not None and prim.normal is not None:
            # Normals take the inverse transpose: the cofactor matrix, signed by det.
            cof = np.stack([np.cross(m3[1], m3[2]), np.cross(m3[2], m3[0]), np.cross(m3[0], m3[1])])
            cof *= np.float32(np.sign(np.linalg.det(m3)) or 1.0)
            out = nrm[v0 : v0 + count]
            np.matmul(_array(binary, prim.normal), cof.T, out=out)
            length = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, length, out=out, where=length > 1e-12)
        if col is not None and prim.color is not None:
            col[v0 : v0 + count] = _colors(binary, prim.color, width)
        tri = idx[f0 : f0 + nf]
        if prim.indices:
            src = _array(binary, prim.indices)
            if int(src.max()) >= count:
                raise _fail("GLB indices point past the vertex list")
            tri.reshape(-1)[:] = src
        else:
            tri.reshape(-1)[:] = np.arange(count, dtype=np.uint32)
        if np.linalg.det(m3) < 0:
            tri[:, [1, 2]] = tri[:, [2, 1]]  # a mirroring instance flips the winding
        tri += np.uint32(v0)
        v0, f0 = v0 + count, f0 + nf
    return _checked(Mesh(pos, idx, nrm, col), [])


def _checked(mesh: Mesh, unchecked: Sequence[tuple[_Primitive, object]]) -> Mesh:
    if len(mesh.faces) and unchecked and int(mesh.faces.max()) >= len(mesh.positions):
        raise _fail("GLB indices point past the vertex list")
    if not np.isfinite(mesh.positions).all():
        raise _fail("GLB vertices contain NaN or infinite values")
    if mesh.normals is not None and not np.isfinite(mesh.normals).all():
        raise _fail("GLB normals contain NaN or infinite values")
    colors = mesh.colors
    if colors is not None and not (
        np.isfinite(colors).all() and 0 <= colors.min() <= colors.max() <= 1
    ):
        colors = np.clip(np.nan_to_num(colors, nan=1.0), 0.0, 1.0)
        return Mesh(mesh.positions, mesh.faces, mesh.normals, colors)
    return mesh


def read_mesh(data: bytes, limits: GlbLimits) -> Mesh:
    """Bound the GLB's cost from its JSON, then decode what its scene draws."""
    if len(data) > limits.max_bytes:
        raise _fail(f"model is {len(data)} bytes, over the {limits.max_bytes}-byte limit")
    doc, binary = _split_chunks(data, limits.max_json_bytes)
    required = doc.get("extensionsRequired", [])
    if required:
        # Draco, meshopt, quantisation...: we decode none of them.
        raise _fail(f"GLB requires extensions we do not decode: {required!r}")
    buffers = _items(doc, "buffers", 1)
    if not buffers:
        raise _fail("GLB has no buffers")
    if "uri" in buffers[0]:
        # External buffers would make us fetch URIs named by an untrusted agent.
        raise _fail("GLB refers to external buffers")
    check = _Checker(doc, len(binary), limits)
    if not check.meshes:
        raise _fail("GLB contains no meshes")
    drawn = _instances(check)
    _bound(check, drawn, len(data))
    # Huge transforms overflow to inf, which _checked rejects: not worth a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        return _assemble(binary, drawn)


def encode_glb(mesh: Mesh) -> bytes:
    """A GLB of one mesh with one primitive: indices, POSITION, NORMAL?, COLOR_0?."""
    faces = np.ascontiguousarray(mesh.faces, dtype="<u4")
    parts: list[NDArray[np.generic]] = [faces, np.ascontiguousarray(mesh.positions, "<f4")]
    lo, hi = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
    accessors: list[dict[str, object]] = [
        {"bufferView": 0, "componentType": UINT, "count": faces.size, "type": "SCALAR",
         "min": [int(faces.min())], "max": [int(faces.max())]},
        {"bufferView": 1, "componentType": FLOAT, "count": len(mesh.positions), "type": "VEC3",
         "min": [float(x) for x in lo], "max": [float(x) for x in hi]},
    ]  # fmt: skip
    attributes = {"POSITION": 1}
    for name, extra in (("NORMAL", mesh.normals), ("COLOR_0", mesh.colors)):
        if extra is not None:
            attributes[name] = len(parts)
            accessors.append(
                {"bufferView": len(parts), "componentType": FLOAT, "count": len(extra),
                 "type": f"VEC{extra.shape[1]}"}
            )  # fmt: skip
            parts.append(np.ascontiguousarray(extra, "<f4"))
    views, offset = [], 0
    for i, part in enumerate(parts):
        views.append(
            {"buffer": 0, "byteOffset": offset, "byteLength": part.nbytes,
             "target": 34963 if i == 0 else 34962}
        )  # fmt: skip
        offset += part.nbytes  # 4-byte components: every part stays aligned
    doc = {
        "asset": {"version": "2.0", "generator": "shapefarm coordinator (normalised)"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "material": 0}]}],
        "materials": [
            {
                "name": "vertex-colour",
                "pbrMetallicRoughness": {
                    "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 0.8,
                },
            }
        ],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + offset
    head = struct.pack("<4sII", GLB_MAGIC, 2, total) + struct.pack("<II", len(text), CHUNK_JSON)
    # One copy, straight from the arrays into the result.
    return b"".join([head, text, struct.pack("<II", offset, CHUNK_BIN), *(p.data for p in parts)])


def normalise_glb(data: bytes, limits: GlbLimits) -> tuple[bytes, GlbInfo]:
    """Check an untrusted GLB and return the normalised GLB to store, with its counts."""
    mesh = read_mesh(data, limits)
    info = GlbInfo(len(mesh.positions), len(mesh.faces), mesh.colors is not None)
    return encode_glb(mesh), info
