"""Sizes and CPU of the viewer's meshopt copy (coordinator.meshes.compact) against the
stored GLB: raw and after gzip at level 1 (what deploy/nginx.conf sends), and the
coordinator's CPU to make it once per model.

    python -m bench.compact                       # instant 10 KiB / 1 MiB, tiny at 64 and 128
    python -m bench.compact --frame-sizes '' --write-docs

Models: the ``instant`` generator's sized GLBs (the closed-loop benchmark's) and the
``tiny`` Shap-E pipeline's output (random weights, the real marching cubes and export)
at marching-cubes grids of 64 and 128, normalised as a result upload stores it.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import sys
import time
from pathlib import Path

from agent.instant import sized_glb
from coordinator.meshes.compact import compact_glb
from coordinator.meshes.glb import normalise_glb, read_mesh
from coordinator.meshes.glbcheck import GlbLimits

SECTION = "#### The viewer's copy: latest run"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
LIMITS = GlbLimits(max_bytes=64 * 2**20)
ROUNDS = 5


def _tiny(frame_size: int) -> bytes:
    from agent.generator import GenerationRequest, Generator, GeneratorConfig

    generator = Generator(GeneratorConfig(model="tiny", max_batch=1, frame_size=frame_size))
    request = GenerationRequest("bench-compact", "a small red chair", 7, 15.0, 8)
    return generator.generate([request], lambda _: None, lambda: False)[0].glb


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def measure(name: str, upload: bytes) -> str:
    stored, _ = normalise_glb(upload, LIMITS)
    mesh = read_mesh(stored, LIMITS)
    times = []
    for _ in range(ROUNDS):
        started = time.process_time()
        compact = compact_glb(mesh)
        times.append(time.process_time() - started)
    plain_gz, compact_gz = len(gzip.compress(stored, 1)), len(gzip.compress(compact, 1))
    return (
        f"| {name} | {len(mesh.positions):,} | {_kib(len(stored))} | {_kib(plain_gz)} | "
        f"{_kib(len(compact))} | {_kib(compact_gz)} | ×{plain_gz / compact_gz:.1f} | "
        f"{sorted(times)[ROUNDS // 2] * 1000:.1f} ms |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10240,1048576", help="instant GLB sizes in bytes")
    parser.add_argument("--frame-sizes", default="64,128", help="tiny model grids ('' for none)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs"]
    rows = [
        measure(f"instant {int(size) // 1024} KiB", sized_glb(int(size)))
        for size in args.sizes.split(",")
        if size
    ]
    rows += [
        measure(f"tiny, frame {frame}", _tiny(int(frame)))
        for frame in args.frame_sizes.split(",")
        if frame
    ]
    lines = [
        f"Command: `{' '.join(['python -m bench.compact', *shown])}` "
        f"(CPython {platform.python_version()}, "
        f"{platform.machine()}; CPU median of {ROUNDS}).",
        "",
        "| model | vertices | stored GLB | gzip -1 | viewer copy | gzip -1 | fewer bytes sent "
        "| CPU to make it |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        docs = DOCS.read_text()
        start = docs.index(SECTION)
        body_start = docs.index("\n", start) + 1
        end = docs.find("\n#", body_start)
        end = len(docs) if end == -1 else end + 1
        DOCS.write_text(docs[:body_start] + "\n" + text + "\n\n" + docs[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
