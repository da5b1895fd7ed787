"""Keep the C heap's freed memory for reuse in the processes that move model bytes.

Both ends of the agent link handle a result in large, short-lived buffers (WebSocket
frames, chunk payloads, the joined GLB, its normalised copy, file reads): each one is
allocated and freed in turn, a few MiB per MiB uploaded. glibc's malloc serves a
request above its mmap threshold (128 KiB at first, raised only up to the largest
block freed) with a fresh ``mmap`` and returns the heap's free top to the kernel past its
trim threshold, so every such buffer comes back as new pages, each a page fault to fill
(about 0.6 ms per MiB on this project's test machine: a third of the kernel time of a
1 MiB result). :func:`keep_freed_memory` raises both thresholds once at start: buffers up
to ``MMAP_BELOW`` come from the heap and the freed heap is kept up to ``KEEP_BYTES``
(returned past that), so a busy process keeps the pages it used. Where the C library is
not glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_BELOW = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit (HEAP_MAX / 2)
KEEP_BYTES = 64 * 2**20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module's text); True if it did."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done: bool = libc.mallopt(M_MMAP_THRESHOLD, MMAP_BELOW) == 1
        return done and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1)
    except (OSError, AttributeError) as exc:  # no such library or function
        log.debug("malloc thresholds left as they are: %s", exc)
        return False
