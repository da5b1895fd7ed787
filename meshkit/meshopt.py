"""Encoders for ``EXT_meshopt_compression`` buffer views (glTF), in numpy.

Two of the extension's bitstreams (its Appendix A), written from the specification:

- **attributes** (mode 0, header ``0xa0``): elements of ``stride`` bytes, cut into
  blocks of at most ``min((8192 // stride) & ~15, 256)`` elements; within a block each
  byte position is a "data block" of zigzag-coded byte deltas from the element before,
  in groups of 16, each group stored in 0, 2, 4 or 8 bits per delta (2 and 4 with a
  sentinel for a delta that does not fit, stored whole after the group's bits). The
  stream ends with the baseline element (the first element here), padded to 32 bytes.
- **triangles** (mode 1, header ``0xe1``): a code byte per triangle naming an edge
  of a recent triangle (a 16-entry FIFO) and the third vertex as new, recent (a
  16-entry vertex FIFO) or explicit (a LEB128 varint of its zigzag-coded delta), or,
  for a triangle on no remembered edge, its three vertices so; then a 16-byte table.
  Vertices are numbered in the order the stream first uses them.

The decoders are the browser's (model-viewer's meshopt decoder): nothing here reads
these streams back. The attribute groups are built with whole-array operations (a
megabyte of vertex data costs a few milliseconds); the triangle codes follow the
decoder's FIFOs one triangle at a time (about 3 µs a triangle).
Pure functions over arrays: no I/O, no coordinator or agent imports.
"""

from __future__ import annotations

from array import array

import numpy as np
from numpy.typing import NDArray

ATTRIBUTES_HEADER = 0xA0  # bitstream version 0, the one the glTF extension allows
TAIL_MIN = 32  # the attribute stream's tail: the baseline element, padded to this
GROUP = 16  # deltas per group
ROW = 24  # a group's most bytes (4-bit: 8 bytes of nibbles + 16 sentinel escapes)


def max_block_elements(stride: int) -> int:
    return min((8192 // stride) & ~15, 256)


def _zigzag8(delta: NDArray[np.uint8]) -> NDArray[np.uint8]:
    signed = delta.view(np.int8)
    return ((signed.astype(np.int16) << 1) ^ (signed.astype(np.int16) >> 7)).astype(np.uint8)


def _data_blocks(deltas: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The encoded data blocks of one or more attribute blocks of equal length.

    ``deltas``: (blocks, elements, stride) zigzag deltas, ``elements`` a multiple of 16
    (zero-padded). Returns the bytes of every data block in stream order: block by
    block, byte position by byte position, each its header bits then its groups."""
    blocks, elements, stride = deltas.shape
    groups = elements // GROUP
    # (blocks, stride, groups, 16): a data block is one byte position of a block.
    values = np.ascontiguousarray(deltas.transpose(0, 2, 1)).reshape(blocks, stride, groups, GROUP)
    flat = values.reshape(-1, GROUP)
    over2, over4 = flat >= 3, flat >= 15
    sizes = np.stack(
        [
            np.where(flat.any(axis=1), 1 << 30, 0),  # 0 bits: only when every delta is 0
            4 + over2.sum(axis=1),
            8 + over4.sum(axis=1),
            np.full(len(flat), 16),
        ],
        axis=1,
    )
    code = np.argmin(sizes, axis=1)  # the first of equal sizes: fewer bits, as meshopt
    length = sizes[np.arange(len(flat)), code]
    rows = np.zeros((len(flat), ROW), np.uint8)
    for bits, over, width in ((1, over2, 2), (2, over4, 4)):
        pick = code == bits
        if not pick.any():
            continue
        v, escaped = flat[pick], over[pick]
        capped = np.minimum(v, (1 << width) - 1).astype(np.uint8)
        per_byte = 8 // width
        packed = np.zeros((len(v), GROUP // per_byte), np.uint8)
        for slot in range(per_byte):  # most significant bits first
            packed |= capped[:, slot::per_byte] << np.uint8(8 - width * (slot + 1))
        out = rows[pick]
        out[:, : packed.shape[1]] = packed
        # The escaped deltas, in order, right after the group's bits.
        where = packed.shape[1] + np.cumsum(escaped, axis=1) - 1
        row_of = np.nonzero(escaped)[0]
        out[row_of, where[escaped]] = v[escaped]
        rows[pick] = out
    raw = code == 3
    rows[raw, :GROUP] = flat[raw]
    # Header bits: 2 per group, the first group in the lowest bits, 4 groups a byte.
    header_bytes = (groups + 3) // 4
    codes = np.zeros((blocks * stride, header_bytes * 4), np.uint8)
    codes[:, :groups] = code.reshape(blocks * stride, groups)
    quads = codes.reshape(blocks * stride, header_bytes, 4)
    header = quads[..., 0] | quads[..., 1] << 2 | quads[..., 2] << 4 | quads[..., 3] << 6
    # Each data block as units of ROW bytes: its header, then its groups; keep each
    # unit's used length.
    units = np.zeros((blocks * stride, 1 + groups, ROW), np.uint8)
    units[:, 0, :header_bytes] = header
    units[:, 1:, :] = rows.reshape(blocks * stride, groups, ROW)
    used = np.empty((blocks * stride, 1 + groups), np.int64)
    used[:, 0] = header_bytes
    used[:, 1:] = length.reshape(blocks * stride, groups)
    keep = np.arange(ROW) < used[..., None]
    out_bytes: NDArray[np.uint8] = units[keep]
    return out_bytes


def encode_attributes(elements: NDArray[np.uint8]) -> bytes:
    """Mode 0 (attributes): ``elements`` is (count, stride) bytes, stride a multiple of
    4 and at most 256."""
    if elements.ndim != 2 or elements.dtype != np.uint8:
        raise ValueError("elements must be a (count, stride) array of bytes")
    count, stride = elements.shape
    if stride == 0 or stride % 4 or stride > 256:
        raise ValueError("stride must be a multiple of 4 from 4 to 256")
    baseline = elements[0] if count else np.zeros(stride, np.uint8)
    previous = np.concatenate([baseline[None, :], elements[:-1]]) if count else elements
    deltas = _zigzag8((elements - previous).astype(np.uint8))
    parts: list[bytes | NDArray[np.uint8]] = [bytes([ATTRIBUTES_HEADER])]
    per_block = max_block_elements(stride)
    full = count // per_block
    if full:
        parts.append(_data_blocks(deltas[: full * per_block].reshape(full, per_block, stride)))
    rest = count - full * per_block
    if rest:
        padded = np.zeros((1, -(-rest // GROUP) * GROUP, stride), np.uint8)
        padded[0, :rest] = deltas[full * per_block :]
        parts.append(_data_blocks(padded))
    tail = max(TAIL_MIN, stride)
    parts.append(bytes(tail - stride))
    parts.append(baseline.tobytes())
    return b"".join(p if isinstance(p, bytes) else p.tobytes() for p in parts)


TRIANGLES_HEADER = 0xE1
CHUNK = 8192  # triangles turned into Python lists at a time
EDGE_SLOTS = 15  # edge FIFO entries a code can name (0xf is taken)
VERTEX_SLOTS_AFTER_EDGE = 12  # vertex FIFO entries 1..12 after an edge (0xd-0xf are taken)
VERTEX_SLOTS = 14  # vertex FIFO entries a 0xfY/0xfe/0xff code can name (nibble 1..14)
# The stream's lookup table for codes 0xf0-0xfd (a triangle on no remembered edge, its
# first vertex new): 0xZW, Z and W for its second and third vertex, 0 new, k the k-th
# newest in the vertex FIFO. Slot 0 is "all three new"; the others "the second new,
# the third one of the 13 newest" (the commonest cases in our models). The last two
# bytes must be 0 and no nibble 0xf.
TABLE = bytes([0x00, *range(0x01, 0x0E), 0, 0])
SLOTS = {zw: i for i, zw in enumerate(TABLE[:VERTEX_SLOTS])}


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(delta: int) -> int:
    return delta << 1 if delta >= 0 else (-delta << 1) - 1


class _TriangleState:
    """The decoder's state, mirrored: vertices numbered as first emitted (``next``),
    the last explicit index, and the edge and vertex FIFOs (index 0 the newest)."""

    def __init__(self, vertex_count: int) -> None:
        # Machine integers, not lists of Python ints: 8 bytes a vertex.
        self.number = array("q", [-1]) * vertex_count
        self.order = array("q")  # old vertex ids by new number
        # Edges as one int each (a << 32 | b): no tuple per edge for the collector to
        # track (in a process of a few 100,000 objects, cyclic GC doubled the cost).
        self.edges: list[int] = []
        self.vertices: list[int] = []
        self.last = 0

    def new(self, vertex: int) -> int:
        self.number[vertex] = len(self.order)
        self.order.append(vertex)
        return self.number[vertex]

    def push_edge(self, a: int, b: int) -> None:
        self.edges.insert(0, a << 32 | b)
        del self.edges[16:]

    def push_vertex(self, v: int) -> None:
        self.vertices.insert(0, v)
        del self.vertices[16:]

    def explicit(self, v: int, data: bytearray) -> None:
        _varint(_zigzag(v - self.last), data)
        self.last = v


def _slot(items: list[int], value: int, lo: int, hi: int) -> int:
    """An index in ``lo``..``hi - 1`` where ``items`` holds ``value``, or -1 (no slice,
    no exception: nothing allocated per look)."""
    if value not in items:
        return -1
    i = items.index(value)
    if i < lo and items.count(value) > 1:
        i = items.index(value, lo)
    return i if lo <= i < hi else -1


def _across(s: _TriangleState, a: int, b: int, c: int, codes: bytearray, data: bytearray) -> bool:
    """Codes 0xXY for the triangle (a, b, c) if its edge (a, b) is still in the FIFO."""
    na, nb = s.number[a], s.number[b]
    if na < 0 or nb < 0:
        return False
    x = _slot(s.edges, na << 32 | nb, 0, EDGE_SLOTS)
    if x < 0:
        return False
    nc = s.number[c]
    if nc < 0:
        nc = s.new(c)
        codes.append(x << 4)
        s.push_vertex(nc)
    elif (y := _slot(s.vertices, nc, 1, VERTEX_SLOTS_AFTER_EDGE + 1)) > 0:
        codes.append(x << 4 | y)
    else:
        if nc == s.last - 1 or nc == s.last + 1:
            codes.append(x << 4 | (0xD if nc == s.last - 1 else 0xE))
            s.last = nc
        else:
            codes.append(x << 4 | 0xF)
            s.explicit(nc, data)
        s.push_vertex(nc)
    s.push_edge(nc, nb)
    s.push_edge(na, nc)
    return True


def _reference(s: _TriangleState, v: int) -> tuple[int, int]:
    """(nibble, number) of the second or third vertex of a triangle on no remembered
    edge: 0 new (numbered now), 1-14 the vertex FIFO's entry + 1, 0xf explicit."""
    n = s.number[v]
    if n < 0:
        return 0, s.new(v)
    i = _slot(s.vertices, n, 0, VERTEX_SLOTS)
    return (i + 1 if i >= 0 else 0xF), n


def _free(s: _TriangleState, p: int, q: int, r: int, codes: bytearray, data: bytearray) -> None:
    """Codes 0xfY, 0xfe, 0xff: a triangle sharing no remembered edge, started at a new
    vertex where it has one (the first such of its rotations)."""
    a, b, c = (q, r, p) if s.number[p] >= 0 and s.number[q] < 0 else (p, q, r)
    if s.number[a] >= 0 and s.number[r] < 0:
        a, b, c = r, p, q
    fresh = s.number[a] < 0
    na = s.new(a) if fresh else s.number[a]
    # The FIFO is read as it stands before this triangle's pushes (all at the end).
    zb, nb = _reference(s, b)
    zc, nc = _reference(s, c)
    zw = zb << 4 | zc
    if fresh and zw in SLOTS:
        codes.append(0xF0 | SLOTS[zw])
    else:
        codes.append(0xFE if fresh else 0xFF)
        data.append(zw)  # never 0x00 here (the table's slot 0: next is never reset)
        if not fresh:
            s.explicit(na, data)
        if zb == 0xF:
            s.explicit(nb, data)
        if zc == 0xF:
            s.explicit(nc, data)
    s.push_edge(nb, na)
    s.push_edge(nc, nb)
    s.push_edge(na, nc)
    s.push_vertex(na)
    if zb in (0, 0xF):
        s.push_vertex(nb)
    if zc in (0, 0xF):
        s.push_vertex(nc)


def encode_triangles(
    faces: NDArray[np.integer], vertex_count: int
) -> tuple[bytes, NDArray[np.int64]]:
    """Mode 1 (triangles): ``faces`` (f, 3) over ``vertex_count`` vertices.

    Returns the stream and the vertex order it needs: the vertices numbered as the
    triangles first use them (vertices no face uses are left out), as old ids by new
    number. Triangles keep their order and winding (each may be rotated). One pass in
    Python: 3 µs a triangle where the order is coherent (our models), 6 µs where no
    triangle follows its neighbour; memory 16 bytes a vertex besides the output."""
    state = _TriangleState(vertex_count)
    codes, data = bytearray(), bytearray()
    flat = np.asarray(faces, np.int64).ravel()
    for start in range(0, len(flat), 3 * CHUNK):  # as Python ints a chunk at a time
        ids = flat[start : start + 3 * CHUNK].tolist()  # one flat list: nothing nested
        for i in range(0, len(ids), 3):
            p, q, r = ids[i], ids[i + 1], ids[i + 2]
            if not (
                _across(state, p, q, r, codes, data)
                or _across(state, q, r, p, codes, data)
                or _across(state, r, p, q, codes, data)
            ):
                _free(state, p, q, r, codes, data)
    stream = bytes([TRIANGLES_HEADER]) + bytes(codes) + bytes(data) + TABLE
    return stream, np.frombuffer(state.order, np.int64).copy()


RECENT = 16  # triangles whose open neighbours the traversal looks back to


def _neighbours(faces: NDArray[np.int64]) -> NDArray[np.int64]:
    """(f, 3): for each triangle's edge, a triangle on its other side, or -1. An edge
    shared by more than two triangles pairs them along the way (a hint, not a graph)."""
    ends = faces[:, [0, 1, 1, 2, 2, 0]].astype(np.int32).reshape(-1, 2)  # ids < 2**31
    low, high = ends.min(axis=1), ends.max(axis=1)
    order = np.lexsort((high, low))
    same = (low[order][1:] == low[order][:-1]) & (high[order][1:] == high[order][:-1])
    first, second = order[:-1][same], order[1:][same]
    side = np.full(len(ends), -1, np.int64)
    side[first] = second // 3
    side[second] = first // 3
    return side.reshape(-1, 3)


def locality_order(faces: NDArray[np.integer]) -> NDArray[np.int64]:
    """An order of the triangles in which most follow a neighbour: from each triangle to
    one across its edges not yet taken, else across one of the last ``RECENT``
    triangles' edges, else the first not taken. The triangle codes then name a
    remembered edge far more often (1 byte instead of 2-5), and vertices numbered by
    first use lie closer together (smaller deltas). A permutation of
    ``range(len(faces))``; about 1.6 µs a triangle."""
    rows = np.asarray(faces, np.int64).reshape(-1, 3)
    count = len(rows)
    side = array("q")  # flat, t's neighbours at 3t..3t+2: 8 bytes each, nothing tracked
    if count:
        side.frombytes(_neighbours(rows).tobytes())
    taken = bytearray(count)
    out = array("q")
    recent: list[int] = []
    scan = 0
    while len(out) < count:
        pick = -1
        for t in recent:  # the newest first: its own neighbours come first
            for n in side[3 * t : 3 * t + 3]:
                if n >= 0 and not taken[n]:
                    pick = n
                    break
            if pick >= 0:
                break
        if pick < 0:
            while taken[scan]:
                scan += 1
            pick = scan
        taken[pick] = 1
        out.append(pick)
        recent.insert(0, pick)
        del recent[RECENT:]
    return np.frombuffer(out, np.int64).copy()
