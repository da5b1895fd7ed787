"""permessage-deflate for control messages only: result bytes go out as they are.

RFC 7692 lets a sender choose per message: a message whose first frame has RSV1
clear is not compressed, and the peer's decoder passes it through (websockets
does). GLB and PNG bytes barely shrink under deflate, and compressing a 1 MiB
upload cost the agent tens of milliseconds of CPU per MiB; JSON control
messages (hello, progress, result headers) keep compression. websockets 17 has
no per-message switch on ``send``, so the extension decides by frame opcode.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.typing import ExtensionParameter


class TextOnlyDeflate(PerMessageDeflate):
    """Compresses text messages; binary messages (and their continuation frames) stay raw."""

    _raw_message = False

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode in CTRL_OPCODES:
            return frame
        if frame.opcode is not Opcode.CONT:
            self._raw_message = frame.opcode is Opcode.BINARY
        if self._raw_message:
            # Not compressed: RSV1 stays clear and the shared window is untouched.
            return frame
        return super().encode(frame)


class TextOnlyDeflateFactory(ClientPerMessageDeflateFactory):
    """Offers permessage-deflate like websockets' default; negotiates :class:`TextOnlyDeflate`."""

    def process_response_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> PerMessageDeflate:
        negotiated = super().process_response_params(params, accepted_extensions)
        ours = TextOnlyDeflate.__new__(TextOnlyDeflate)
        ours.__dict__.update(negotiated.__dict__)  # same parameters, same zlib objects
        return ours


def client_extensions() -> list[TextOnlyDeflateFactory]:
    """What the agent passes to ``connect(extensions=..., compression=None)``."""
    return [TextOnlyDeflateFactory(client_max_window_bits=True)]
