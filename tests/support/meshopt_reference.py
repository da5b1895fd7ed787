"""Decoders of two ``EXT_meshopt_compression`` bitstreams, written from the
specification's Appendix A one byte at a time: slow, plain, and independent of the
vectorised encoders in ``meshkit.meshopt`` they check (meshoptimizer's own decoder,
through node, checks both in ``tests/meshkit/test_meshopt.py`` as well)."""

from __future__ import annotations


class DecodeError(ValueError):
    pass


def _unzigzag8(v: int) -> int:
    return (~(v >> 1) & 0xFF) if v & 1 else v >> 1


def decode_attributes(data: bytes, count: int, stride: int) -> bytes:
    if not data or data[0] != 0xA0:
        raise DecodeError("not an attribute stream (version 0)")
    tail = max(32, stride)
    if len(data) < 1 + tail:
        raise DecodeError("too short for its tail")
    last = bytearray(data[len(data) - stride :])
    end = len(data) - tail
    pos = 1
    out = bytearray(count * stride)
    per_block = min((8192 // stride) & ~15, 256)
    done = 0
    while done < count:
        elements = min(count - done, per_block)
        groups = (elements + 15) // 16
        for k in range(stride):
            header = data[pos : pos + (groups + 3) // 4]
            pos += (groups + 3) // 4
            deltas: list[int] = []
            for g in range(groups):
                code = (header[g // 4] >> ((g % 4) * 2)) & 3
                if code == 0:
                    deltas += [0] * 16
                elif code == 3:
                    deltas += list(data[pos : pos + 16])
                    pos += 16
                else:
                    width = 2 if code == 1 else 4
                    packed = data[pos : pos + 16 * width // 8]
                    pos += len(packed)
                    for i in range(16):
                        byte = packed[i * width // 8]
                        shift = 8 - width * (i % (8 // width) + 1)
                        value = (byte >> shift) & ((1 << width) - 1)
                        if value == (1 << width) - 1:  # the sentinel: the delta follows
                            value = data[pos]
                            pos += 1
                        deltas.append(value)
            for i in range(elements):
                last[k] = (last[k] + _unzigzag8(deltas[i])) & 0xFF
                out[(done + i) * stride + k] = last[k]
            if pos > end:
                raise DecodeError("a data block runs into the tail")
        done += elements
    if pos != end:
        raise DecodeError(f"{end - pos} bytes left before the tail")
    return bytes(out)


def decode_triangles(data: bytes, count: int) -> list[int]:
    """Mode 1: ``count`` indices (a multiple of 3)."""
    if not data or data[0] != 0xE1:
        raise DecodeError("not a triangle stream")
    triangles = count // 3
    if len(data) < 1 + triangles + 16:
        raise DecodeError("too short")
    codeaux = data[-16:]
    if codeaux[14:] != b"\0\0" or any(b >> 4 == 0xF or b & 0xF == 0xF for b in codeaux):
        raise DecodeError("a bad lookup table")
    codes = data[1 : 1 + triangles]
    pos, end = 1 + triangles, len(data) - 16
    edges: list[tuple[int, int]] = []
    vertices: list[int] = []
    state = {"next": 0, "last": 0}
    out: list[int] = []

    def byte() -> int:
        nonlocal pos
        if pos >= end:
            raise DecodeError("extra data runs into the table")
        pos += 1
        return data[pos - 1]

    def index() -> int:
        value = shift = 0
        while True:
            b = byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        delta = ~(value >> 1) if value & 1 else value >> 1
        state["last"] = (state["last"] + delta) & 0xFFFFFFFF
        return state["last"]

    def fresh() -> int:
        state["next"] += 1
        return state["next"] - 1

    def edge(i: int) -> tuple[int, int]:
        if i >= len(edges):
            raise DecodeError("an edge never pushed")
        return edges[i]

    def vertex(i: int) -> int:
        if i >= len(vertices):
            raise DecodeError("a vertex never pushed")
        return vertices[i]

    def push_edge(a: int, b: int) -> None:
        edges.insert(0, (a, b))
        del edges[16:]

    def push_vertex(v: int) -> None:
        vertices.insert(0, v)
        del vertices[16:]

    for code in codes:
        hi, lo = code >> 4, code & 0xF
        if hi < 0xF:
            a, b = edge(hi)
            if lo == 0:
                c = fresh()
                push_vertex(c)
            elif lo < 0xD:
                c = vertex(lo)
            elif lo < 0xF:
                c = state["last"] + (-1 if lo == 0xD else 1)
                state["last"] = c
                push_vertex(c)
            else:
                c = index()
                push_vertex(c)
            push_edge(c, b)
            push_edge(a, c)
        else:
            if lo < 0xE:
                zw = codeaux[lo]
                z, w = zw >> 4, zw & 0xF
                a = fresh()
                b = fresh() if z == 0 else vertex(z - 1)
                c = fresh() if w == 0 else vertex(w - 1)
                pushed = [a] + ([b] if z == 0 else []) + ([c] if w == 0 else [])
            else:
                zw = byte()
                if zw == 0:
                    state["next"] = 0
                z, w = zw >> 4, zw & 0xF
                a = fresh() if lo == 0xE else index()
                b = fresh() if z == 0 else index() if z == 0xF else vertex(z - 1)
                c = fresh() if w == 0 else index() if w == 0xF else vertex(w - 1)
                pushed = [a] + ([b] if z in (0, 0xF) else []) + ([c] if w in (0, 0xF) else [])
            push_edge(b, a)
            push_edge(c, b)
            push_edge(a, c)
            for v in pushed:
                push_vertex(v)
        out += [a, b, c]
    if pos != end:
        raise DecodeError("extra data left over")
    return out
