"""The agent starts and stops cleanly where POSIX signal handling is unavailable (Windows)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import stopping
from agent.cli import EXIT_OK, serve
from agent.settings import AgentSettings, Secret
from tests.support.agent_fakes import FAKE_TYPES, FakeGenerator, ScriptedCoordinator

ROOT = Path(__file__).resolve().parents[2]
CLOSE_GOING_AWAY = 1001


def _no_loop_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the running loop behave like Windows' Proactor loop."""

    def refuse(self: Any, *args: Any) -> None:
        raise NotImplementedError

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(type(loop), "add_signal_handler", refuse)
    monkeypatch.setattr(type(loop), "remove_signal_handler", refuse)


async def test_stopping_falls_back_to_signal_signal_and_a_real_sigint_stops_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_loop_signals(monkeypatch)
    before = signal.getsignal(signal.SIGINT)
    async with ScriptedCoordinator() as server:
        settings = AgentSettings(url=server.url, token=Secret("t"), spool_dir=tmp_path)
        task = asyncio.create_task(serve(settings, FakeGenerator(), FAKE_TYPES))
        peer = await server.next_peer()
        await peer.handshake()
        assert signal.getsignal(signal.SIGINT) is not before  # our fallback handler
        os.kill(os.getpid(), signal.SIGINT)
        assert await peer.wait_closed() == CLOSE_GOING_AWAY
        async with asyncio.timeout(10):
            assert await task == EXIT_OK
    assert signal.getsignal(signal.SIGINT) is before  # restored on the way out


async def test_stopping_without_any_signal_api_a_cancelled_main_task_stops_gracefully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_loop_signals(monkeypatch)

    def no_signal(*args: Any) -> None:
        raise ValueError("signal only works in main thread of the main interpreter")

    monkeypatch.setattr(stopping, "set_handler", no_signal)
    async with ScriptedCoordinator() as server:
        settings = AgentSettings(url=server.url, token=Secret("t"), spool_dir=tmp_path)
        task = asyncio.create_task(serve(settings, FakeGenerator(), FAKE_TYPES))
        peer = await server.next_peer()
        await peer.handshake()
        task.cancel()  # what asyncio.run does on Ctrl-C when nothing else caught it
        assert await peer.wait_closed() == CLOSE_GOING_AWAY
        async with asyncio.timeout(10):
            assert await task == EXIT_OK


async def test_stopping_the_real_cli_in_a_process_whose_loop_has_no_signal_handlers(
    tmp_path: Path,
) -> None:
    code = (
        "import asyncio, sys\n"
        "def refuse(self, *a):\n    raise NotImplementedError\n"
        "for cls in (asyncio.SelectorEventLoop, asyncio.BaseEventLoop):\n"
        "    cls.add_signal_handler = refuse\n"
        "from agent.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    async with ScriptedCoordinator() as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            "--url",
            server.url,
            "--token",
            "t",
            "--model",
            "instant",
            "--data-dir",
            str(tmp_path),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            peer = await server.next_peer()
            await peer.handshake()
            proc.send_signal(signal.SIGTERM)
            assert await peer.wait_closed() == CLOSE_GOING_AWAY
            async with asyncio.timeout(20):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == EXIT_OK, err.decode()
    assert b"agent stopped" in err
