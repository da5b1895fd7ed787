"""The agent's permessage-deflate: text messages compressed, binary ones sent raw."""

from __future__ import annotations

import os

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from agent.compression import TextOnlyDeflate, TextOnlyDeflateFactory


def _pair() -> tuple[TextOnlyDeflate, PerMessageDeflate]:
    """The agent's negotiated extension and a stock websockets decoder for its frames."""
    factory = TextOnlyDeflateFactory(client_max_window_bits=True)
    ours = factory.process_response_params([("client_max_window_bits", "12")], [])
    assert isinstance(ours, TextOnlyDeflate)
    peer = PerMessageDeflate(False, False, 12, 15)
    return ours, peer


def test_compression_text_is_deflated_binary_is_sent_raw() -> None:
    ours, peer = _pair()
    text = b'{"type":"progress","job":"abc","step":1,"total":64}' * 20
    out = ours.encode(Frame(Opcode.TEXT, text))
    assert out.rsv1 and len(out.data) < len(text) / 4
    assert peer.decode(out).data == text

    blob = os.urandom(1 << 20)
    raw = ours.encode(Frame(Opcode.BINARY, blob))
    assert not raw.rsv1 and raw.data is blob  # not even copied
    assert peer.decode(raw).data == blob

    # The shared window was not touched by the raw message: text still decodes after it.
    again = ours.encode(Frame(Opcode.TEXT, text))
    assert again.rsv1 and peer.decode(again).data == text


def test_compression_fragmented_binary_stays_raw_to_its_last_frame() -> None:
    ours, peer = _pair()
    first = ours.encode(Frame(Opcode.BINARY, b"a" * 1000, fin=False))
    ping = ours.encode(Frame(Opcode.PING, b"x"))
    last = ours.encode(Frame(Opcode.CONT, b"b" * 1000, fin=True))
    assert not first.rsv1 and first.data == b"a" * 1000
    assert ping.data == b"x" and last.data == b"b" * 1000
    for frame in (first, last):
        assert peer.decode(frame).data == frame.data
    # A fragmented text message after it is compressed again, continuation included.
    head = ours.encode(Frame(Opcode.TEXT, b"c" * 1000, fin=False))
    tail = ours.encode(Frame(Opcode.CONT, b"d" * 1000, fin=True))
    assert head.rsv1 and len(tail.data) < 100
    assert peer.decode(head).data + peer.decode(tail).data == b"c" * 1000 + b"d" * 1000
