"""The C heap keeps freed memory for reuse once ``keep_freed_memory`` ran (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A process that frees and reallocates what a 2 MiB result costs (chunks, then the joined
# model) fifty times, counting the page faults of the second half of it each time.
CHURN = """
import resource, sys
from protocol import heap

def churn():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        parts = [bytes(256 * 1024) for _ in range(8)]
        whole = b"".join(parts)
        del parts, whole
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

churn()
before = churn()
kept = heap.keep_freed_memory()
churn()
print(kept, before, churn())
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=60, check=True
    )
    kept, before, after = done.stdout.split()
    assert kept == "True"
    # glibc's defaults hand each 256 KiB..2 MiB buffer back to the kernel: every round
    # faults its pages in again (~50,000 faults here); kept, next to none do.
    assert int(before) > 10_000, done.stdout
    assert int(after) < int(before) // 20, done.stdout
