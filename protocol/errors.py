"""Errors raised by the protocol layer; each names which peer broke the rules."""

from __future__ import annotations

from typing import Literal

Peer = Literal["agent", "coordinator"]


class ProtocolError(Exception):
    """A message or frame that breaks the protocol.

    ``code`` is a stable machine-readable string sent in ``error`` messages and
    WebSocket close reasons; ``peer`` says who broke the rules.
    """

    def __init__(
        self, message: str, *, code: str = "bad_message", peer: Peer | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.peer = peer

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.peer} broke the protocol: {text}" if self.peer else text
