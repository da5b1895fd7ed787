"""Peak memory of one call, measured in a fresh subprocess (``VmHWM``).

The process imports the module, warms it up on a small input, notes its
resident size, reads the input file, resets the kernel's peak (clear_refs),
runs the call and reports how far its peak resident size (VmHWM) rose. An
address-space cap keeps a bomb from taking the machine down: a call that would
pass it fails with MemoryError instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = r"""
import gc, json, os, resource, sys, time, importlib
module, name, path, warm, cap = sys.argv[1:6]
resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))
func = getattr(importlib.import_module(module), name)
extra = json.loads(sys.argv[6])
try:
    func(open(warm, "rb").read(), *extra)
except Exception:
    pass
fd = os.open(path, os.O_RDONLY)
data = os.read(fd, os.fstat(fd).st_size)  # one allocation: no transient peak
os.close(fd)
gc.collect()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
# ru_maxrss survives exec (the forked parent's size would count): reset the peak instead.
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = status("VmRSS")
start = time.perf_counter()
outcome = "ok"
try:
    func(data, *extra)
except MemoryError:
    outcome = "MemoryError"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:200]
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({"rise": peak - before, "seconds": seconds, "outcome": outcome}))
"""


@dataclass(frozen=True)
class Probe:
    rise: int  # bytes the peak resident size rose by during the call
    seconds: float
    outcome: str  # "ok", "MemoryError" or "<ExceptionType>: message"


def probe(
    func: str,
    data: bytes,
    warm: bytes,
    tmp: Path,
    *args: object,
    cap: int = 4 * 1024**3,
    timeout: float = 300,
) -> Probe:
    """Run ``func`` ("module:name") on ``data`` in a subprocess and measure it."""
    module, name = func.split(":")
    path, warm_path = tmp / "probe-input.glb", tmp / "probe-warm.glb"
    path.write_bytes(data)
    warm_path.write_bytes(warm)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, name, str(path), str(warm_path), str(cap),
         json.dumps(list(args))],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return Probe(int(result["rise"]), float(result["seconds"]), str(result["outcome"]))
