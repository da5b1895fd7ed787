"""Encoding and strict decoding of control messages (JSON text frames)."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from protocol.errors import ProtocolError
from protocol.messages import AgentMessage, CoordinatorMessage, Message

MAX_CONTROL_BYTES = 256 * 1024
"""No control message is anywhere near this; larger frames are hostile or broken."""

_encoder = msgspec.json.Encoder()
# Annotated, so each decoder's result has its union type (msgspec infers none from a union).
_any: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_from_agent: msgspec.json.Decoder[AgentMessage] = msgspec.json.Decoder(AgentMessage)
_from_coordinator: msgspec.json.Decoder[CoordinatorMessage] = msgspec.json.Decoder(
    CoordinatorMessage
)

T = TypeVar("T")


def encode(message: Message) -> str:
    """Serialise a message to the JSON text of one WebSocket frame."""
    return _encoder.encode(message).decode()


def _decode(data: str | bytes, decoder: msgspec.json.Decoder[T]) -> T:
    # Count bytes, not characters: a str of 256K non-ASCII characters is up to 1 MiB.
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > MAX_CONTROL_BYTES:
        raise ProtocolError(
            f"control message of {size} bytes exceeds {MAX_CONTROL_BYTES}", code="too_big"
        )
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid message: {exc}", code="bad_message") from exc
    except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}", code="bad_json") from exc


def decode(data: str | bytes) -> Message:
    """Parse any message; raises :class:`ProtocolError` with a clear reason."""
    return _decode(data, _any)


def decode_from_agent(data: str | bytes) -> AgentMessage:
    """Parse a message an agent may send; coordinator-only types are rejected."""
    try:
        return _decode(data, _from_agent)
    except ProtocolError as exc:
        exc.peer = "agent"
        raise


def decode_from_coordinator(data: str | bytes) -> CoordinatorMessage:
    """Parse a message a coordinator may send; agent-only types are rejected."""
    try:
        return _decode(data, _from_coordinator)
    except ProtocolError as exc:
        exc.peer = "coordinator"
        raise
