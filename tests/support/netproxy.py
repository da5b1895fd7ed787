"""A TCP proxy for WebSocket traffic that can cut or stall an agent's upload mid-stream.

It parses the agent → coordinator frame headers (RFC 6455 section 5.2; client
frames are masked, but headers are not), so a test can act at an exact point:
after ``after_binary`` binary (chunk) frames of the first upload went through.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Literal

Action = Literal["cut", "stall"]
BINARY = 0x2


def _frame_length(buf: bytes | bytearray) -> int | None:
    """Bytes in the first complete frame of ``buf``, or None if it is incomplete."""
    if len(buf) < 2:
        return None
    length, offset = buf[1] & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, offset = struct.unpack_from(">H", buf, 2)[0], 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, offset = struct.unpack_from(">Q", buf, 2)[0], 10
    offset += 4 if buf[1] & 0x80 else 0
    return offset + length if len(buf) >= offset + length else None


class UploadProxy:
    def __init__(self, target_port: int, action: Action, after_binary: int = 1) -> None:
        self.target_port = target_port
        self.action = action
        self.after_binary = after_binary
        self.triggered = asyncio.Event()
        self.connections = 0
        self._armed = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agent/ws"

    async def __aenter__(self) -> UploadProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection at once (RST-like: no close handshake)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()  # the coordinator is down: the agent retries
            return
        self._writers |= {writer, up_writer}
        down = asyncio.create_task(self._pump(up_reader, writer))
        try:
            await self._pump_agent(reader, up_writer)
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await down
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def _pump_agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        upgraded = False
        seen = 0
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                buf += data
                if not upgraded:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    writer.write(bytes(buf[: end + 4]))
                    del buf[: end + 4]
                    upgraded = True
                while (size := _frame_length(buf)) is not None:
                    frame = bytes(buf[:size])
                    del buf[:size]
                    if self._armed and frame[0] & 0x0F == BINARY:
                        if seen >= self.after_binary:
                            self._armed = False
                            self.triggered.set()
                            if self.action == "cut":
                                return
                            await asyncio.Event().wait()  # stall: hold everything from now on
                        seen += 1
                    writer.write(frame)
                await writer.drain()
