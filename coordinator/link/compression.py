"""permessage-deflate on the agent socket with a bound on what inflation may cost.

Without a bound, one socket read of compressed frames inflated into hundreds of
queued messages before uvicorn paused reading (a compression bomb past every
upload limit; docs/security.md). Here every compressed message is still limited
to the frame limit (``ws_max_size``, as websockets checks while inflating), and
all that one socket read inflates together to :data:`READ_BUDGET_FRAMES` times
it: past that the connection is closed with 1009. uvicorn pauses reading after
each read that yields a message, so what waits in memory stays bounded.

Control messages from agents are small JSON and compress well; agents of this
version send result bytes uncompressed (``agent.compression``), older agents
compressed ones, which still fit the budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import PayloadTooBig
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter

# What one socket read may inflate to, in frame limits (a GLB chunk frame of an
# older agent that compresses everything inflates to at most one frame limit).
READ_BUDGET_FRAMES = 2


class BudgetedDeflate(PerMessageDeflate):
    """Inflates like websockets does, counting the bytes against a per-read budget."""

    budget = 0
    inflated = 0

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        decoded = super().decode(frame, max_size=max_size)
        if decoded is not frame:  # it was compressed
            self.inflated += len(decoded.data)
            if self.inflated > self.budget:
                raise PayloadTooBig(self.inflated, self.budget)
        return decoded


class BudgetedDeflateFactory(ServerPerMessageDeflateFactory):
    def __init__(self, budget: int) -> None:
        # uvicorn's own choice of windows and memory: about 20 KiB of zlib state per socket.
        super().__init__(
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
        self.budget = budget

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, negotiated = super().process_request_params(params, accepted_extensions)
        ours = BudgetedDeflate.__new__(BudgetedDeflate)
        ours.__dict__.update(negotiated.__dict__)
        ours.budget = self.budget
        return response, ours


class BudgetedDeflateProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol with :class:`BudgetedDeflateFactory` negotiated."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        max_size = config.ws_max_size
        self.conn = ServerProtocol(
            extensions=[BudgetedDeflateFactory(READ_BUDGET_FRAMES * max_size)],
            max_size=max_size,
            logger=logging.getLogger("uvicorn.error"),
        )

    def data_received(self, data: bytes) -> None:
        for extension in self.conn.extensions:
            if isinstance(extension, BudgetedDeflate):
                extension.inflated = 0
        super().data_received(data)
