"""Time Shap-E generation stages (load, per step, decode, export) per batch size.

    python -m bench.generate --model tiny --steps 64 --batch-sizes 1,2,4,8
    python -m bench.generate --model random-full --steps 2 --batch-sizes 1,2 --write-docs
    python -m bench.generate --model tiny --batch-sizes 1 --mesh-targets original,high,medium,low

``--mesh-targets`` adds a table of the mesh options (decimation time, faces before and
after, watertight rate of the printable repair) over ``--mesh-models`` models.

Image-to-3D (``ShapEImg2ImgPipeline``): ``--kind image`` runs the image twin of the
model (``tiny`` -> ``tiny-img2img``, ``openai/shap-e`` -> ``openai/shap-e-img2img``, ...)
on synthetic input pictures; on a GPU with the weights in the cache, one command::

    python -m bench.generate --kind image --model openai/shap-e --device cuda --write-docs

Random models have the real shapes (``random-full``) but meaningless output, so
decode and export times depend on how much surface the noise happens to make.
"""

from __future__ import annotations

import argparse
import datetime
import io
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch

from agent.generator import GenerationRequest, Generator, GeneratorConfig, ProgressEvent
from agent.models import IMAGE_HUB_ID, TEXT_HUB_ID, model_kind
from bench import meshopts

# The image-to-3D twin of each text model name (``--kind image``).
IMAGE_TWIN = {
    "tiny": "tiny-img2img",
    "random-full": "random-full-img2img",
    TEXT_HUB_ID: IMAGE_HUB_ID,
}

SECTION = "## Generation"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


@dataclass
class Row:
    batch: int
    sampling_s: float
    step_s: float
    decode_s: float
    export_s: float
    total_s: float
    faces: int
    peak_mb: int


def peak_memory_mb(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() // 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident set.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def picture(i: int, side: int = 512) -> bytes:
    """A synthetic input picture (PNG, as the coordinator sends it): a shaded object."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    hue = (60 * i) % 256
    for r in range(side // 3, 0, -4):  # a shaded disc: something round to reconstruct
        shade = 255 - r * 255 // (side // 3)
        draw.ellipse(
            (side // 2 - r, side // 2 - r, side // 2 + r, side // 2 + r),
            fill=(hue, shade, 255 - hue),
        )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def run_batch(generator: Generator, batch: int, steps: int, guidance: float) -> Row:
    marks: dict[tuple[str, int], float] = {}

    def on_progress(event: ProgressEvent) -> None:
        marks.setdefault((event.stage, event.step), time.perf_counter())

    image = generator.kind == "image"
    requests = [
        GenerationRequest(
            f"bench-{i}",
            "" if image else f"a small object number {i}",
            1000 + i,
            guidance,
            steps,
            image=picture(i) if image else None,
        )
        for i in range(batch)
    ]
    if generator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = generator.generate(requests, on_progress, lambda: False)
    end = time.perf_counter()
    sampling = marks[("sampling", steps)] - marks[("sampling", 0)]
    decode = marks[("decoding", batch)] - marks[("decoding", 0)]
    export = marks[("exporting", batch)] - marks[("exporting", 0)]
    return Row(
        batch=batch,
        sampling_s=sampling,
        step_s=sampling / steps,
        decode_s=decode / batch,
        export_s=export / batch,
        total_s=end - start,
        faces=sum(r.faces for r in results) // batch,
        peak_mb=peak_memory_mb(str(generator.device)),
    )


def markdown(args: argparse.Namespace, generator: Generator, load_s: float, rows: list[Row]) -> str:
    info = generator.device_info
    device = f"{info.gpu_name} ({info.vram_mb} MiB)" if info.gpu_name else platform.processor()
    lines = [
        f"Model `{args.model}` ({generator.kind}-to-3D), device `{info.device}` "
        f"{device or platform.machine()}, "
        f"{torch.get_num_threads()} threads, dtype {info.dtype}, {args.steps} steps "
        f"(Heun: {2 * args.steps - 1} prior calls), guidance {args.guidance}, "
        f"marching-cubes grid {args.frame_size}^3, preview {args.preview_size} px. "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"{datetime.date.today().isoformat()}. Load: {load_s:.1f} s.",
        "",
        "| batch | sampling s | per step s | decode s/model | export s/model "
        "| total s | s/model | faces/model | peak MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.batch} | {r.sampling_s:.2f} | {r.step_s:.3f} | {r.decode_s:.2f} "
            f"| {r.export_s:.3f} | {r.total_s:.2f} | {r.total_s / r.batch:.2f} "
            f"| {r.faces} | {r.peak_mb} |"
        )
    return "\n".join(lines) + "\n"


INTRO = (
    "Measured by `python -m bench.generate` (see `--help`); each run replaces its own\n"
    "subsection below. Random weights (`tiny`, `random-full`, and `--kind image`'s\n"
    "`tiny-img2img`, `random-full-img2img`) have the real code path and, for `random-full`,\n"
    "the real shapes of `openai/shap-e` (`-img2img`); their meshes are noise, so decode and\n"
    "export times depend on how much surface the noise makes.\n"
)


def _replace_block(lines: list[str], heading: str, body: list[str], level: str) -> list[str]:
    """Replace the block under ``heading`` up to the next heading of ``level`` or higher."""
    stops = ("# ", "## ") if level == "##" else ("# ", "## ", "### ")
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    block = [heading + "\n", "\n", *body]
    if start is None:
        sep = [] if not lines or lines[-1] == "\n" else ["\n"]
        return [*lines, *sep, *block]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(stops)), len(lines))
    tail = ["\n", *lines[end:]] if end < len(lines) else []
    return [*lines[:start], *block, *tail]


def write_docs(path: Path, subsection: str, body: str) -> None:
    """Put ``body`` under ``### subsection`` inside the "Generation" section of ``path``.

    Other people's sections and other subsections are left as they are.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        lines = _replace_block(lines, SECTION, [INTRO], "##")
        start = next(i for i, line in enumerate(lines) if line.strip() == SECTION)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))), len(lines)
    )
    inner = lines[start + 1 : end]
    while inner and inner[-1] == "\n":
        inner.pop()
    inner = _replace_block(inner, f"### {subsection}", body.splitlines(keepends=True), "###")
    rest = ["\n", *lines[end:]] if end < len(lines) else []
    path.write_text("".join([*lines[: start + 1], *inner, *rest]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, random-full, hub id or directory")
    parser.add_argument(
        "--kind",
        choices=("text", "image"),
        default=None,
        help="image: run the model's image-to-3D twin on synthetic pictures (default: the "
        "model's own kind)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--guidance", type=float, default=15.0)
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated")
    parser.add_argument("--frame-size", type=int, default=64, help="marching-cubes grid")
    parser.add_argument("--preview-size", type=int, default=256)
    parser.add_argument("--offline", action="store_true", help="never touch the network")
    parser.add_argument("--notes", default="", help="text appended under the table")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"replace '{SECTION}' in {DOCS.name}"
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--mesh-targets",
        default="",
        help="mesh options table: comma-separated targets (original, high, medium, low or "
        "a face count), e.g. original,high,medium,low",
    )
    parser.add_argument("--mesh-models", type=int, default=4, help="models for the mesh table")
    return parser.parse_args(argv)


def mesh_table(args: argparse.Namespace, generator: Generator) -> str:
    """Generate ``--mesh-models`` full-detail models, then time the mesh options on them."""
    targets = meshopts.parse_targets(args.mesh_targets)
    glbs = []
    for i in range(args.mesh_models):
        request = GenerationRequest(f"mesh-{i}", f"a small object number {i}", 2000 + i,
                                    args.guidance, args.steps)  # fmt: skip
        glbs.extend(r.glb for r in generator.generate([request], lambda _: None, lambda: False))
    info = generator.device_info
    what = (
        f"Model `{args.model}` ({args.steps} steps, grid {args.frame_size}^3) on "
        f"{info.gpu_name or platform.processor() or platform.machine()}, "
        f"{datetime.date.today().isoformat()}"
    )
    return meshopts.markdown(meshopts.measure(glbs, targets), what)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.kind == "image":
        args.model = IMAGE_TWIN.get(args.model, args.model)
    if args.kind is not None and model_kind(args.model) != args.kind:
        print(f"--kind {args.kind}: {args.model!r} is not a {args.kind} model", file=sys.stderr)
        return 2
    meshopts.parse_targets(args.mesh_targets)  # a bad target fails before the slow part
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    config = GeneratorConfig(
        model=args.model,
        device=args.device,
        offline=args.offline,
        max_batch=max(sizes),
        frame_size=args.frame_size,
        preview_size=args.preview_size,
    )
    generator = Generator(config)
    start = time.perf_counter()
    generator.load()
    load_s = time.perf_counter() - start
    print(f"loaded {args.model} in {load_s:.1f} s on {generator.device_info}", file=sys.stderr)
    rows = []
    for size in sizes:
        rows.append(run_batch(generator, size, args.steps, args.guidance))
        print(f"batch {size}: {rows[-1]}", file=sys.stderr)
    table = markdown(args, generator, load_s, rows)
    if args.notes:
        table += "\n" + args.notes.strip() + "\n"
    print(table)
    info = generator.device_info
    if args.write_docs:
        write_docs(args.docs, f"`{args.model}` on {info.gpu_name or 'CPU'}", table)
    if args.mesh_targets:
        meshes = mesh_table(args, generator)
        print(meshes)
        if args.write_docs:
            subsection = f"Mesh options: `{args.model}` on {info.gpu_name or 'CPU'}"
            write_docs(args.docs, subsection, meshes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
