"""The shapefarm coordinator⇄agent wire protocol.

Pure: no sockets, no asyncio, no clock. See ``docs/protocol.md``.
"""

from __future__ import annotations

from protocol.closecodes import CloseCode
from protocol.codec import decode, decode_from_agent, decode_from_coordinator, encode
from protocol.errors import ProtocolError
from protocol.frames import (
    Assembler,
    BufferSink,
    Chunk,
    Sink,
    describe,
    iter_chunks,
    pack_chunk,
    split,
    unpack_chunk,
)
from protocol.messages import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Accepted,
    AgentMessage,
    Artifact,
    Assign,
    Cancel,
    Capabilities,
    CoordinatorMessage,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Hello,
    JobSpec,
    Limits,
    Message,
    Progress,
    Result,
    ResultAck,
    Welcome,
)
from protocol.session import AgentSession, CoordinatorSession, State, Upload, negotiate

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Accepted",
    "AgentMessage",
    "AgentSession",
    "Artifact",
    "Assembler",
    "Assign",
    "BufferSink",
    "Cancel",
    "Capabilities",
    "Chunk",
    "CloseCode",
    "CoordinatorMessage",
    "CoordinatorSession",
    "Drain",
    "Error",
    "Failed",
    "Heartbeat",
    "Hello",
    "JobSpec",
    "Limits",
    "Message",
    "Progress",
    "ProtocolError",
    "Result",
    "ResultAck",
    "Sink",
    "State",
    "Upload",
    "Welcome",
    "decode",
    "decode_from_agent",
    "decode_from_coordinator",
    "describe",
    "encode",
    "iter_chunks",
    "negotiate",
    "pack_chunk",
    "split",
    "unpack_chunk",
]
