"""Untrusted GLB files: bound what one would cost from its JSON alone.

A volunteer agent is untrusted, and a GLB is a small file that can describe a
huge amount of work: accessors that overlap through tiny strides, one mesh
instanced by thousands of nodes, accessors nothing uses. So the JSON alone is
checked first (counts of nodes, accessors and primitives; every byte range an
accessor reads; vertices and faces counted with instancing; the size the model
would decode to), and :func:`scan` returns what the scene draws only when all of
that is within :class:`GlbLimits`. :mod:`coordinator.meshes.glb` then decodes it.
Pure functions over bytes: no coordinator imports, no I/O.
"""

from __future__ import annotations

import json
import math
import struct
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
class Accessor:
    offset: int  # into the binary chunk
    count: int
    width: int
    dtype: str
    stride: int


@dataclass(frozen=True)
class Primitive:
    position: Accessor
    normal: Accessor | None
    color: Accessor | None
    indices: Accessor | None

    @property
    def faces(self) -> int:
        return (self.indices.count if self.indices else self.position.count) // 3


# Every mesh the scene draws, with its world transform.
Drawn = list[tuple[list[Primitive], NDArray[np.float64]]]


def fail(message: str) -> InvalidModelError:
    return InvalidModelError(message)


def _split_chunks(data: bytes, max_json: int) -> tuple[dict[str, object], memoryview]:
    if len(data) < 20:
        raise fail(f"too short for a GLB ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC:
        raise fail("not a GLB file (bad magic)")
    if version != 2:
        raise fail(f"unsupported glTF container version {version}")
    if length != len(data):
        raise fail(f"GLB header says {length} bytes but {len(data)} were given")
    view = memoryview(data)  # slices of a memoryview copy nothing
    chunks: list[tuple[int, memoryview]] = []
    offset = 12
    while offset < len(data):
        if offset + 8 > len(data):
            raise fail("truncated GLB chunk header")
        size, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + size > len(data):
            raise fail("truncated GLB chunk")
        chunks.append((kind, view[offset + 8 : offset + 8 + size]))
        offset += 8 + size
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise fail("GLB does not start with a JSON chunk")
    if len(chunks[0][1]) > max_json:
        # Parsed JSON costs tens of bytes per byte of text: bound it before parsing.
        raise fail(f"GLB JSON chunk is {len(chunks[0][1])} bytes, over the {max_json}-byte limit")
    try:
        doc = json.loads(bytes(chunks[0][1]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"GLB JSON chunk does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise fail("GLB JSON chunk is not an object")
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == CHUNK_BIN else view[:0]
    return doc, binary


def _items(doc: dict[str, object], key: str, limit: int) -> list[dict[str, object]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise fail(f"GLB field {key!r} is malformed")
    if len(value) > limit:
        raise fail(f"GLB has {len(value)} {key}, over the limit of {limit}")
    return value


def _int(obj: dict[str, object], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail(f"GLB field {key!r} is not a non-negative integer: {value!r}")
    return value


class _Checker:
    """Checks what the scene uses, from the JSON and the chunk sizes alone."""

    def __init__(self, doc: dict[str, object], binary_len: int, limits: GlbLimits) -> None:
        self.doc, self.binary_len, self.limits = doc, binary_len, limits
        self.accessors = _items(doc, "accessors", limits.max_accessors)
        self.views = _items(doc, "bufferViews", limits.max_accessors)
        self.meshes = _items(doc, "meshes", limits.max_accessors)
        self.nodes = _items(doc, "nodes", limits.max_nodes)
        self._meshes: dict[int, list[Primitive]] = {}

    def accessor(self, index: object, types: set[str], components: set[int]) -> Accessor:
        if not isinstance(index, int) or not 0 <= index < len(self.accessors):
            raise fail(f"primitive refers to missing accessor {index!r}")
        acc = self.accessors[index]
        kind, comp = acc.get("type"), acc.get("componentType")
        if kind not in types or comp not in components:
            raise fail(f"accessor {index} has type {kind!r}/{comp!r}, expected {sorted(types)}")
        if "sparse" in acc:
            raise fail(f"accessor {index} is sparse")
        count = _int(acc, "count")
        if not 1 <= count <= 3 * self.limits.max_faces:
            raise fail(f"accessor {index} has count {count}")
        view_i = acc.get("bufferView")
        if not isinstance(view_i, int) or not 0 <= view_i < len(self.views):
            raise fail(f"accessor {index} has no buffer view")
        view = self.views[view_i]
        if view.get("buffer") != 0:
            raise fail(f"buffer view {view_i} is not in the GLB binary chunk")
        dtype = COMPONENTS[int(str(comp))]
        size = np.dtype(dtype).itemsize
        elem = TYPE_WIDTH[str(kind)] * size
        stride = _int(view, "byteStride", elem)
        if "byteStride" in view and not (4 <= stride <= 252 and stride % 4 == 0):
            raise fail(f"buffer view {view_i} has byteStride {stride} (glTF: 4..252, x4)")
        if stride < elem:
            # Overlapping elements would let a small view describe a huge array.
            raise fail(f"accessor {index} elements ({elem} bytes) overlap: stride {stride}")
        view_off, view_len = _int(view, "byteOffset", 0), _int(view, "byteLength")
        acc_off = _int(acc, "byteOffset", 0)
        if (view_off + acc_off) % size:
            raise fail(f"accessor {index} is not aligned to its component size")
        if view_off + view_len > self.binary_len:
            raise fail(f"buffer view {view_i} reads past the end of the binary chunk")
        if acc_off + stride * (count - 1) + elem > view_len:
            raise fail(f"accessor {index} reads past the end of its buffer view")
        return Accessor(view_off + acc_off, count, TYPE_WIDTH[str(kind)], dtype, stride)

    def mesh(self, index: object) -> list[Primitive]:
        if not isinstance(index, int) or not 0 <= index < len(self.meshes):
            raise fail(f"node refers to missing mesh {index!r}")
        if index not in self._meshes:
            self._meshes[index] = [self.primitive(p) for p in self._prims(index)]
        return self._meshes[index]

    def _prims(self, index: int) -> list[object]:
        prims = self.meshes[index].get("primitives")
        if not isinstance(prims, list) or not prims:
            raise fail("GLB mesh has no primitives")
        return prims

    def primitive(self, prim: object) -> Primitive:
        if not isinstance(prim, dict) or prim.get("mode", TRIANGLES) != TRIANGLES:
            raise fail("only triangle meshes are accepted")
        attrs = prim.get("attributes")
        if not isinstance(attrs, dict) or "POSITION" not in attrs:
            raise fail("GLB primitive has no POSITION attribute")
        # Only these are read; other attributes (UVs, targets) are never materialised.
        pos = self.accessor(attrs["POSITION"], {"VEC3"}, {FLOAT})
        normal = color = indices = None
        if "NORMAL" in attrs:
            normal = self.accessor(attrs["NORMAL"], {"VEC3"}, {FLOAT})
        if "COLOR_0" in attrs:
            color = self.accessor(attrs["COLOR_0"], {"VEC3", "VEC4"}, {FLOAT, UBYTE, USHORT})
        for name, acc in (("NORMAL", normal), ("COLOR_0", color)):
            if acc is not None and acc.count != pos.count:
                raise fail(f"attribute {name} count differs from POSITION")
        if "indices" in prim:
            indices = self.accessor(prim["indices"], {"SCALAR"}, {UBYTE, USHORT, UINT})
            if indices.stride != np.dtype(indices.dtype).itemsize:
                raise fail("index buffer views may not have a byteStride")
        if (indices.count if indices else pos.count) % 3:
            raise fail("triangle primitive has a vertex or index count not divisible by 3")
        return Primitive(pos, normal, color, indices)


def _matrix(node: dict[str, object]) -> NDArray[np.float64]:
    def numbers(key: str, n: int, default: list[float]) -> list[float]:
        value = node.get(key, default)
        if (
            not isinstance(value, list)
            or len(value) != n
            or not all(isinstance(x, int | float) and math.isfinite(x) for x in value)
        ):
            raise fail(f"node {key} is not {n} finite numbers")
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


def _instances(check: _Checker) -> Drawn:
    """Every (mesh, world transform) the scene draws; the node graph must be a forest."""
    nodes, limits = check.nodes, check.limits
    parent = [-1] * len(nodes)
    for i, node in enumerate(nodes):
        children = node.get("children", [])
        if not isinstance(children, list):
            raise fail(f"node {i} children are malformed")
        for child in children:
            if not isinstance(child, int) or not 0 <= child < len(nodes) or child == i:
                raise fail(f"node {i} has a bad child {child!r}")
            if parent[child] != -1:
                raise fail(f"node {child} has more than one parent")
            parent[child] = i
    scenes = _items(check.doc, "scenes", MAX_SCENES)
    roots: object = [i for i, p in enumerate(parent) if p == -1]
    if scenes:
        scene = check.doc.get("scene", 0)
        if not isinstance(scene, int) or not 0 <= scene < len(scenes):
            raise fail(f"GLB default scene {scene!r} does not exist")
        roots = scenes[scene].get("nodes", [])
    if not isinstance(roots, list) or len(set(map(repr, roots))) != len(roots):
        raise fail("scene nodes are malformed")
    out: list[tuple[list[Primitive], NDArray[np.float64]]] = []
    stack: list[tuple[int, NDArray[np.float64], int]] = []
    for root in reversed(roots):  # a stack: draw in scene order, children in node order
        if not isinstance(root, int) or not 0 <= root < len(nodes) or parent[root] != -1:
            raise fail(f"scene node {root!r} is not a root node")
        stack.append((root, np.eye(4), 1))
    seen = 0
    while stack:
        index, above, depth = stack.pop()
        seen += 1
        if depth > limits.max_depth:
            raise fail(f"node graph is deeper than {limits.max_depth}")
        node = nodes[index]
        world = above @ _matrix(node)
        if "mesh" in node:
            out.append((check.mesh(node["mesh"]), world))
        children = node.get("children", [])
        assert isinstance(children, list)  # checked above, with every index in range
        stack.extend((c, world, depth + 1) for c in reversed(children))
    if seen < len(nodes) and not scenes:
        raise fail("node graph has a cycle")
    return out


def _bound(check: _Checker, drawn: Drawn, size: int) -> None:
    limits = check.limits
    prims = [p for mesh, _ in drawn for p in mesh]
    if not prims:
        raise fail("GLB scene draws no meshes")
    if len(prims) > limits.max_primitives:
        raise fail(f"GLB draws {len(prims)} primitives, over the limit of {limits.max_primitives}")
    vertices = sum(p.position.count for p in prims)
    faces = sum(p.faces for p in prims)
    if vertices > limits.max_vertices:
        raise fail(f"GLB has {vertices} vertices (with instancing), over {limits.max_vertices}")
    if faces > limits.max_faces:
        raise fail(f"GLB has {faces} faces (with instancing), over {limits.max_faces}")
    per_vertex = 12 + (12 if all(p.normal for p in prims) else 0) + 16
    decoded = vertices * per_vertex + faces * 12
    budget = max(limits.max_expansion * size, limits.expansion_floor_bytes)
    if decoded > budget:
        raise fail(f"GLB would decode to {decoded} bytes, over the {budget}-byte limit")


def scan(data: bytes, limits: GlbLimits) -> tuple[memoryview, Drawn]:
    """The binary chunk and what the scene draws, once its cost is known to be bounded."""
    if len(data) > limits.max_bytes:
        raise fail(f"model is {len(data)} bytes, over the {limits.max_bytes}-byte limit")
    doc, binary = _split_chunks(data, limits.max_json_bytes)
    required = doc.get("extensionsRequired", [])
    if required:
        # Draco, meshopt, quantisation...: we decode none of them.
        raise fail(f"GLB requires extensions we do not decode: {required!r}")
    buffers = _items(doc, "buffers", 1)
    if not buffers:
        raise fail("GLB has no buffers")
    if "uri" in buffers[0]:
        # External buffers would make us fetch URIs named by an untrusted agent.
        raise fail("GLB refers to external buffers")
    check = _Checker(doc, len(binary), limits)
    if not check.meshes:
        raise fail("GLB contains no meshes")
    drawn = _instances(check)
    _bound(check, drawn, len(data))
    return binary, drawn
