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


def decode_indices(data: bytes, count: int) -> list[int]:
    if not data or data[0] != 0xD1:
        raise DecodeError("not an index stream")
    if len(data) < 5 or data[-4:] != bytes(4):
        raise DecodeError("the tail is not 4 zero bytes")
    pos, last, out = 1, [0, 0], []
    for _ in range(count):
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        baseline = value & 1
        delta = ~(value >> 2) if value & 2 else value >> 2
        last[baseline] = (last[baseline] + delta) & 0xFFFFFFFF
        out.append(last[baseline])
    if pos != len(data) - 4:
        raise DecodeError("bytes left over before the tail")
    return out
