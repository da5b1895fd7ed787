"""The uvicorn server as configured for production: slow clients do not keep sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx

from coordinator.settings import load_settings
from tests.support.coordinators import running_coordinator

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64 + b"\r\n\r\n"
TIMEOUT_S = 1.0
SLACK_S = 3.0


async def _trickle(port: int, first: bytes = b"") -> float:
    """Send ``first`` at once, then HEAD a byte a second; seconds until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(first)

        async def send() -> None:
            with contextlib.suppress(OSError):  # the server closed it: what we wait for
                for byte in HEAD:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)  # the pace is the point of the test

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(TIMEOUT_S + SLACK_S):
                # Answers to ``first``, then the 408, then the end (or a reset: bytes
                # we sent were left unread when the server closed).
                with contextlib.suppress(ConnectionResetError):
                    while await reader.read(4096):
                        pass
        finally:
            sender.cancel()
        return time.monotonic() - started
    finally:
        writer.close()


async def test_serve_trickled_request_heads_are_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    # From the environment, as in production (SHAPEFARM_HEADER_TIMEOUT_S).
    settings = load_settings(
        {"data_dir": tmp_path, "heartbeat_s": 0.5, "lease_s": 5.0, "secret_key": None},
        environ={"SHAPEFARM_HEADER_TIMEOUT_S": str(TIMEOUT_S)},
    )
    async with running_coordinator(settings) as coordinator:
        keep_alive = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        # 50 slowloris sockets; 10 of them after a complete first request (keep-alive).
        slow = [
            asyncio.create_task(_trickle(coordinator.port, keep_alive if i % 5 == 0 else b""))
            for i in range(50)
        ]
        async with httpx.AsyncClient(base_url=coordinator.http, timeout=5) as client:
            while not all(task.done() for task in slow):
                assert (await client.get("/healthz")).status_code == 200  # meanwhile
                await asyncio.wait(slow, timeout=0.25)
        lasted = [await task for task in slow]  # TimeoutError: a socket outlived the limit
        assert max(lasted) < TIMEOUT_S + SLACK_S and min(lasted) >= TIMEOUT_S * 0.9, lasted


async def test_serve_a_slow_head_within_the_timeout_is_served(tmp_path: Path) -> None:
    settings = load_settings(
        {"data_dir": tmp_path, "heartbeat_s": 0.5, "lease_s": 5.0, "secret_key": None},
        environ={"SHAPEFARM_HEADER_TIMEOUT_S": "5"},
    )
    async with running_coordinator(settings) as coordinator:
        reader, writer = await asyncio.open_connection("127.0.0.1", coordinator.port)
        for part in (HEAD[:10], HEAD[10:40], HEAD[40:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.3)  # a slow but honest client
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200 ")
