"""permessage-deflate on the agent socket: negotiated, and bounded against bombs."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.compression import TextOnlyDeflate, client_extensions
from coordinator.link.compression import READ_BUDGET_FRAMES
from protocol import Capabilities, Hello, decode_from_coordinator, encode
from tests.support.coordinators import make_settings, provision, running_coordinator


async def test_compression_agent_negotiates_deflate_and_is_welcomed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_coordinator(settings) as coordinator:
        _, token_file = await provision(settings, tmp_path)
        async with connect(coordinator.ws, compression=None, extensions=client_extensions()) as ws:
            assert [type(e) for e in ws.protocol.extensions] == [TextOnlyDeflate]
            hello = Hello(
                token=token_file.read_text().strip(),
                versions=(1,),
                agent_version="test",
                capabilities=Capabilities(device="cpu", models=("instant",)),
            )
            await ws.send(encode(hello))  # a compressed text frame
            welcome = decode_from_coordinator(await ws.recv())  # and a compressed answer
            assert type(welcome).__name__ == "Welcome"


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_compression_bomb_in_one_read_closes_the_socket_1009(
    tmp_path: Path, kind: str
) -> None:
    settings = make_settings(tmp_path)
    async with running_coordinator(settings) as coordinator:
        frame_limit = settings.max_frame_bytes
        async with connect(coordinator.ws, max_size=None) as ws:  # stock deflate: all compressed
            # 200 messages of 0.9 frame limits of zeros: ~1 KiB each on the wire, 180
            # frame limits inflated, all in one write (the server reads them together).
            message = bytes(frame_limit * 9 // 10)
            for _ in range(200):
                if kind == "text":
                    ws.protocol.send_text(message)
                else:
                    ws.protocol.send_binary(message)
            wire = b"".join(ws.protocol.data_to_send())
            assert len(wire) < 300 * 1024
            ws.transport.write(wire)
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # the server may answer a first message before closing
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert READ_BUDGET_FRAMES * frame_limit < 200 * len(message)
