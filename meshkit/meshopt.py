"""Encoders for ``EXT_meshopt_compression`` buffer views (glTF), in numpy.

Two of the extension's bitstreams (its Appendix A), written from the specification:

- **attributes** (mode 0, header ``0xa0``): elements of ``stride`` bytes, cut into
  blocks of at most ``min((8192 // stride) & ~15, 256)`` elements; within a block each
  byte position is a "data block" of zigzag-coded byte deltas from the element before,
  in groups of 16, each group stored in 0, 2, 4 or 8 bits per delta (2 and 4 with a
  sentinel for a delta that does not fit, stored whole after the group's bits). The
  stream ends with the baseline element (the first element here), padded to 32 bytes.
- **indices** (mode 2, header ``0xd1``): each index as a LEB128 varint of its
  zigzag-coded delta from the index before, shifted left once (the low bit picks one of
  two baselines; this encoder always uses the first), then 4 zero bytes.

The decoders are the browser's (model-viewer's meshopt decoder): nothing here reads
these streams back. Every group and varint is built with whole-array operations, so
a megabyte of vertex data costs a few milliseconds, not a Python loop per byte.
Pure functions over arrays: no I/O, no coordinator or agent imports.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

ATTRIBUTES_HEADER = 0xA0  # bitstream version 0, the one the glTF extension allows
INDICES_HEADER = 0xD1
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


def encode_indices(indices: NDArray[np.integer]) -> bytes:
    """Mode 2 (indices): any sequence of indices below 2**30 apart from one to the next."""
    values = np.asarray(indices, np.int64).ravel()
    delta = np.diff(values, prepend=0)
    if len(delta) and (delta.min() < -(2**30) or delta.max() >= 2**30):
        raise ValueError("indices too far apart for the indices bitstream")
    zigzag = np.where(delta < 0, ((-delta - 1) << 1) | 1, delta << 1)
    code = (zigzag << 1).astype(np.uint64)  # low bit 0: the first baseline
    nbytes = np.ones(len(code), np.int64)
    for bound in (7, 14, 21, 28):
        nbytes += code >= (1 << bound)
    out = np.zeros(int(nbytes.sum()), np.uint8)
    start = np.cumsum(nbytes) - nbytes
    for j in range(5):
        has = nbytes > j
        if not has.any():
            break
        byte = ((code[has] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        byte |= np.where(nbytes[has] > j + 1, 0x80, 0).astype(np.uint8)
        out[start[has] + j] = byte
    return bytes([INDICES_HEADER]) + out.tobytes() + bytes(4)
