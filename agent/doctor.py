"""``shapefarm-agent doctor``: check this machine, the coordinator and the token.

Every check prints one line, ``ok``, ``warn`` or ``FAIL``, and a failed or
doubtful one says what to do. Exit status 0 when nothing failed, 1 otherwise.
The checks take the same flags as the agent (``--url``, ``--token-file``,
``--device``, ``--cache-dir`` …), so run it with the command line you run the
agent with. Checking the token opens a real agent connection: a running agent
with the same token is replaced for a moment and reconnects by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.models import is_random
from agent.settings import AgentSettings, SettingsError, build_parser, settings_from_namespace

Verdict = Literal["ok", "warn", "FAIL"]
MIN_PYTHON = (3, 11)
WEIGHTS_GB = 6.0  # Shap-E's weights with room to spare
MIN_FREE_VRAM_MB = 6 * 1024
CUDA_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cu124"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.verdict:^4}] {self.name}: {self.detail}"
        return text + (f"\n       → {self.fix}" if self.fix and self.verdict != "ok" else "")


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(map(str, version))
    if version[:2] >= MIN_PYTHON:
        return Check("Python", "ok", shown)
    return Check("Python", "FAIL", f"{shown} is too old", "install Python 3.11 or newer")


def check_torch(device: str, torch_module: Any = None) -> list[Check]:
    """torch, its CUDA build, the GPU and its free memory."""
    try:
        torch = torch_module if torch_module is not None else __import__("torch")
    except ImportError:
        return [
            Check(
                "torch",
                "FAIL",
                "not installed",
                f'NVIDIA GPU: {CUDA_TORCH}; otherwise pip install "shapefarm[agent]"',
            )
        ]
    cuda_build = getattr(torch.version, "cuda", None)
    checks = [
        Check(
            "torch",
            "ok",
            f"{torch.__version__} ({'CUDA ' + cuda_build if cuda_build else 'CPU build'})",
        )
    ]
    wants_cpu = device == "cpu"
    if not torch.cuda.is_available():
        if wants_cpu:
            checks.append(Check("GPU", "warn", "using the CPU: minutes per model"))
        elif cuda_build is None:
            checks.append(
                Check(
                    "GPU",
                    "warn",
                    "torch is a CPU build: no GPU use",
                    f"with an NVIDIA GPU: {CUDA_TORCH}",
                )
            )
        else:
            checks.append(
                Check(
                    "GPU",
                    "FAIL" if device.startswith("cuda") else "warn",
                    "no CUDA device visible",
                    "install or update the NVIDIA driver (nvidia-smi must list the GPU)",
                )
            )
        return checks
    index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else 0
    name = torch.cuda.get_device_name(index)
    free, total = (int(v) // 2**20 for v in torch.cuda.mem_get_info(index))
    detail = f"{name}, {free} MB free of {total} MB"
    if free < MIN_FREE_VRAM_MB:
        return [
            *checks,
            Check(
                "GPU",
                "warn",
                detail,
                "close other GPU programs, or use --vram-cap and --max-batch 1",
            ),
        ]
    return [*checks, Check("GPU", "ok", detail)]


def check_disk(
    cache_dir: Path | None,
    model: str,
    disk_usage: Callable[[str], Any] = shutil.disk_usage,
) -> Check:
    if is_random(model) or Path(model).is_dir():
        return Check("disk", "ok", f"the model {model!r} needs no download")
    from agent.weights import free_bytes, hub_cache

    where = hub_cache(cache_dir)
    free_gb = free_bytes(where, disk_usage) / 2**30
    detail = f"{free_gb:.1f} GB free at {where}"
    if free_gb < WEIGHTS_GB:
        return Check(
            "disk",
            "FAIL",
            detail,
            f"free {WEIGHTS_GB:g} GB there, or point --cache-dir at a disk with room",
        )
    return Check("disk", "ok", detail)


async def check_coordinator(settings: AgentSettings, timeout_s: float = 15.0) -> list[Check]:
    """Dial the coordinator like the agent does: does it answer, is the token accepted?"""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    from agent import __version__
    from protocol import SUPPORTED_VERSIONS, Capabilities, Error, Hello, Welcome, encode
    from protocol import decode_from_coordinator as decode

    url = settings.urls[0]
    try:
        async with asyncio.timeout(timeout_s):
            async with connect(url, open_timeout=timeout_s, max_size=1 << 20) as ws:
                answer = Check("coordinator", "ok", f"{url} answers")
                hello = Hello(
                    token=settings.token.get_secret_value(),
                    versions=SUPPORTED_VERSIONS,
                    agent_version=f"{__version__} (doctor)",
                    capabilities=Capabilities(),
                )
                await ws.send(encode(hello))
                reply = decode(await ws.recv())
                await ws.close()
    except InvalidStatus as exc:
        status = exc.response.status_code
        return [
            Check(
                "coordinator",
                "FAIL",
                f"{url} answered HTTP {status}",
                "check the URL: it ends in /agent/ws",
            )
        ]
    except (OSError, TimeoutError, WebSocketException) as exc:
        return [
            Check(
                "coordinator",
                "FAIL",
                f"cannot reach {url}: {exc}",
                "check the URL (Contribute page), your network, and that the coordinator runs",
            )
        ]
    if isinstance(reply, Welcome):
        note = "" if reply.approved else " (waiting for an administrator's approval)"
        verdict: Verdict = "ok" if reply.approved else "warn"
        return [answer, Check("token", verdict, f"accepted as agent {reply.agent_id}{note}")]
    if isinstance(reply, Error):
        fixes = {
            "bad_token": "copy the token again from the Contribute page, or enroll a new agent",
            "revoked": "this agent was revoked: enroll a new one on the Contribute page",
            "owner_suspended": "your account is suspended: contact the coordinator's admins",
            "version": "update the agent: pip install -U shapefarm[agent]",
        }
        return [
            answer,
            Check("token", "FAIL", f"{reply.code}: {reply.message}", fixes.get(reply.code, "")),
        ]
    return [answer, Check("token", "FAIL", f"unexpected answer {type(reply).__name__}")]


def check_generation(device: str) -> Check:
    """One tiny generation through the real Shap-E code path (no download)."""
    try:
        from agent.generator import GenerationRequest, Generator, GeneratorConfig

        generator = Generator(
            GeneratorConfig(model="tiny", device=device, max_batch=1, frame_size=16)
        )
        generator.load()
        request = GenerationRequest("doctor", "a test cube", seed=1, guidance_scale=3.0, steps=2)
        (result,) = generator.generate([request], lambda event: None, lambda: False)
    except Exception as exc:
        return Check(
            "test generation",
            "FAIL",
            f"{type(exc).__name__}: {exc}",
            'reinstall the dependencies: pip install -c constraints.txt "shapefarm[agent]"',
        )
    return Check("test generation", "ok", f"tiny model on {device}: {len(result.glb)} bytes of GLB")


def doctor_main(argv: Sequence[str], *, out: Any = None) -> int:
    out = out or sys.stdout
    parser: argparse.ArgumentParser = build_parser("shapefarm-agent doctor")
    parser.description = (__doc__ or "").split("\n\n")[1]
    parser.epilog = None
    parser.add_argument("--skip-generation", action="store_true", help="skip the test generation")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    checks = [check_python()]
    settings: AgentSettings | None = None
    try:
        settings = settings_from_namespace(args)
    except SettingsError as exc:
        checks.append(Check("settings", "FAIL", str(exc), "give the same flags as to the agent"))
    device = settings.device if settings else "auto"
    checks += check_torch(device)
    if settings is not None:
        checks.append(check_disk(settings.cache_dir, settings.model))
        checks += asyncio.run(check_coordinator(settings))
    if not args.skip_generation:
        checks.append(check_generation(device))
    for check in checks:
        print(check.line(), file=out)
    failed = sum(check.verdict == "FAIL" for check in checks)
    print("all good" if not failed else f"{failed} check(s) failed", file=out)
    return 1 if failed else 0
