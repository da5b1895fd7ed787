"""``shapefarm-agent doctor``: each check, and what it tells the volunteer to do."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.cli import main
from agent.doctor import (
    CUDA_TORCH,
    check_coordinator,
    check_disk,
    check_generation,
    check_python,
    check_torch,
    doctor_main,
)
from agent.settings import AgentSettings, Secret
from protocol import Error, Hello
from tests.support.agent_fakes import ScriptedCoordinator, welcome


def fake_torch(*, cuda: str | None, available: bool, free_mb: int = 0, total_mb: int = 0) -> Any:
    return SimpleNamespace(
        __version__="2.13.0",
        version=SimpleNamespace(cuda=cuda),
        cuda=SimpleNamespace(
            is_available=lambda: available,
            get_device_name=lambda index: "NVIDIA GeForce RTX 4070",
            mem_get_info=lambda index: (free_mb * 2**20, total_mb * 2**20),
        ),
    )


def test_doctor_python_too_old_says_what_to_install() -> None:
    check = check_python((3, 9, 18))
    assert check.verdict == "FAIL" and "3.11 or newer" in check.line()
    assert check_python().verdict == "ok"


def test_doctor_cpu_build_of_torch_points_at_the_cuda_build() -> None:
    torch_check, gpu = check_torch("auto", fake_torch(cuda=None, available=False))
    assert torch_check.detail == "2.13.0 (CPU build)"
    assert gpu.verdict == "warn" and CUDA_TORCH in gpu.line()


def test_doctor_cuda_build_without_a_visible_gpu_fails_when_cuda_was_asked_for() -> None:
    _, gpu = check_torch("cuda", fake_torch(cuda="12.4", available=False))
    assert gpu.verdict == "FAIL" and "nvidia-smi" in gpu.line()


def test_doctor_gpu_with_little_free_memory_warns() -> None:
    torch = fake_torch(cuda="12.4", available=True, free_mb=2048, total_mb=12288)
    _, gpu = check_torch("cuda:0", torch)
    assert gpu.verdict == "warn" and "2048 MB free of 12288 MB" in gpu.detail
    assert "--vram-cap" in gpu.line()
    roomy = fake_torch(cuda="12.4", available=True, free_mb=20000, total_mb=24576)
    assert check_torch("cuda", roomy)[1].verdict == "ok"


def test_doctor_disk_space_for_the_weights(tmp_path: Path) -> None:
    full = check_disk(tmp_path / "hf", "openai/shap-e", lambda p: SimpleNamespace(free=2 * 2**30))
    assert full.verdict == "FAIL" and "--cache-dir" in full.line()
    roomy = check_disk(tmp_path, "openai/shap-e", lambda p: SimpleNamespace(free=50 * 2**30))
    assert roomy.verdict == "ok"
    assert check_disk(None, "tiny", lambda p: SimpleNamespace(free=0)).verdict == "ok"


async def test_doctor_coordinator_answers_and_accepts_the_token(tmp_path: Path) -> None:
    async with ScriptedCoordinator() as server:
        settings = AgentSettings(url=server.url, token=Secret("sfa.a.b"), spool_dir=tmp_path)
        checking = asyncio.create_task(check_coordinator(settings))
        peer = await server.next_peer()
        hello = await peer.expect(Hello)
        assert hello.agent_version.endswith("(doctor)")
        await peer.send(welcome(approved=False))
        answer, token = await checking
    assert answer.verdict == "ok"
    assert token.verdict == "warn" and "approval" in token.detail


async def test_doctor_refused_token_says_to_copy_it_again(tmp_path: Path) -> None:
    async with ScriptedCoordinator() as server:
        settings = AgentSettings(url=server.url, token=Secret("wrong"), spool_dir=tmp_path)
        checking = asyncio.create_task(check_coordinator(settings))
        peer = await server.next_peer()
        await peer.expect(Hello)
        await peer.send(Error(code="bad_token", message="unknown or invalid", fatal=True))
        _, token = await checking
    assert token.verdict == "FAIL" and "Contribute page" in token.line()


async def test_doctor_unreachable_coordinator(tmp_path: Path) -> None:
    settings = AgentSettings(url="ws://127.0.0.1:9/agent/ws", token=Secret("t"))
    (check,) = await check_coordinator(settings, timeout_s=5)
    assert check.verdict == "FAIL" and "check the URL" in check.line()


def test_doctor_test_generation_failure_says_what_to_do() -> None:
    check = check_generation("cuda:7")  # no such device here
    assert check.verdict == "FAIL" and "pip install" in check.line()


async def test_doctor_command_prints_every_check_and_exits_1_on_a_failure(tmp_path: Path) -> None:
    out = io.StringIO()
    async with ScriptedCoordinator() as server:
        argv = ["--url", server.url, "--token", "t", "--model", "tiny", "--skip-generation"]
        running = asyncio.create_task(asyncio.to_thread(doctor_main, argv, out=out))
        peer = await server.next_peer()
        await peer.expect(Hello)
        await peer.send(Error(code="revoked", message="revoked", fatal=True))
        assert await running == 1
    text = out.getvalue()
    for name in ("Python", "torch", "disk", "coordinator", "token"):
        assert f"] {name}:" in text
    assert "enroll a new one" in text and "1 check(s) failed" in text


def test_doctor_without_url_still_checks_the_machine(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("SHAPEFARM_AGENT_URL", raising=False)
    monkeypatch.delenv("SHAPEFARM_AGENT_TOKEN", raising=False)
    monkeypatch.delenv("SHAPEFARM_AGENT_TOKEN_FILE", raising=False)
    assert main(["doctor", "--skip-generation"]) == 1
    text = capsys.readouterr().out
    assert "[FAIL] settings: the coordinator URL is required" in text
    assert "] Python:" in text and "] torch:" in text
