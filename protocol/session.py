"""Sans-I/O state machines for both ends of an agent connection.

The I/O layer feeds decoded messages (and binary frames) in and sends what the
machine approves; every illegal step raises :class:`ProtocolError` naming the
peer that broke the rules. States::

    handshake ──hello/welcome──▶ ready ◀──▶ busy ──drain──▶ draining ──▶ closed

``busy`` is ``ready`` with at least one job held; ``draining`` finishes held
jobs but takes no new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import msgspec

from protocol.errors import Peer, ProtocolError
from protocol.frames import Assembler, unpack_chunk
from protocol.messages import (
    SUPPORTED_VERSIONS,
    Accepted,
    AgentMessage,
    Assign,
    Cancel,
    CoordinatorMessage,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Hello,
    Progress,
    Result,
    ResultAck,
    Welcome,
)


class State(Enum):
    HANDSHAKE = "handshake"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    CLOSED = "closed"


_OPEN = frozenset({State.READY, State.BUSY, State.DRAINING})
_ACTIVE = frozenset({State.READY, State.BUSY})

# Which message types each side may send in which state. The agent's table is
# checked by the coordinator on receipt and vice versa.
AGENT_SENDS: dict[type, frozenset[State]] = {
    Hello: frozenset({State.HANDSHAKE}),
    Heartbeat: _OPEN,
    Accepted: _OPEN,
    Progress: _OPEN,
    Result: _OPEN,
    Failed: _OPEN,
}
COORDINATOR_SENDS: dict[type, frozenset[State]] = {
    Welcome: frozenset({State.HANDSHAKE}),
    Assign: _ACTIVE,
    Cancel: _OPEN,
    ResultAck: _OPEN,
    Drain: _OPEN,
    Error: frozenset(State) - {State.CLOSED},
}

JobKey = tuple[str, int]


def message_type(kind: type[msgspec.Struct]) -> str:
    """The wire ``type`` of a message class (its msgspec tag)."""
    return str(kind.__struct_config__.tag)


def negotiate(offered: tuple[int, ...]) -> int:
    """Highest protocol version both sides speak."""
    common = set(offered) & set(SUPPORTED_VERSIONS)
    if not common:
        raise ProtocolError(
            f"no common protocol version: agent speaks {sorted(offered)}, "
            f"coordinator speaks {list(SUPPORTED_VERSIONS)}",
            code="version",
            peer="agent",
        )
    return max(common)


@dataclass(frozen=True, slots=True)
class Upload:
    """A finished, checksum-verified upload; ``held`` is False for a stale attempt."""

    result: Result
    parts: list[bytes]
    held: bool


class _Session:
    def __init__(self) -> None:
        self.state = State.HANDSHAKE
        self.held: set[JobKey] = set()

    def _check(
        self, kind: type[msgspec.Struct], table: dict[type, frozenset[State]], peer: Peer
    ) -> None:
        if self.state not in table.get(kind, frozenset()):
            raise ProtocolError(
                f"'{message_type(kind)}' is not allowed in state '{self.state.value}'",
                code="out_of_order",
                peer=peer,
            )

    def _settle_state(self) -> None:
        if self.state in _ACTIVE:
            self.state = State.BUSY if self.held else State.READY

    def _apply_coordinator(self, message: CoordinatorMessage) -> None:
        """The effect of a (checked) coordinator message, the same on both ends."""
        if isinstance(message, Welcome):
            self.state = State.READY
        elif isinstance(message, Assign):
            self.held.update((spec.job, spec.attempt) for spec in message.jobs)
        elif isinstance(message, Cancel):
            self.held.discard((message.job, message.attempt))
        elif isinstance(message, Drain):
            self.state = State.DRAINING
        self._settle_state()

    def release(self, job: str, attempt: int) -> None:
        """Forget a job the coordinator has settled (succeeded, failed or cancelled)."""
        self.held.discard((job, attempt))
        self._settle_state()

    def close(self) -> None:
        self.state = State.CLOSED


class CoordinatorSession(_Session):
    """The coordinator's view of one agent connection."""

    def __init__(self, max_result_bytes: int) -> None:
        super().__init__()
        self.version: int | None = None
        self.max_result_bytes = max_result_bytes
        self._upload: tuple[Result, Assembler] | None = None

    def receive(self, message: AgentMessage) -> AgentMessage:
        self._check(type(message), AGENT_SENDS, "agent")
        if isinstance(message, Hello):
            self.version = negotiate(message.versions)
        elif isinstance(message, Result):
            if self._upload is not None:
                raise ProtocolError(
                    "a new result started before the previous upload finished",
                    code="out_of_order",
                    peer="agent",
                )
            self._upload = (
                message,
                Assembler(message.stream, message.artifacts, self.max_result_bytes),
            )
        return message

    def is_held(self, job: str, attempt: int) -> bool:
        return (job, attempt) in self.held

    @property
    def uploading(self) -> Result | None:
        return self._upload[0] if self._upload else None

    def receive_chunk(self, frame: bytes) -> Upload | None:
        """Feed one binary frame; returns the verified upload once it is complete."""
        if self.state not in _OPEN or self._upload is None:
            raise ProtocolError(
                "binary frame without a preceding result header", code="out_of_order", peer="agent"
            )
        header, assembler = self._upload
        assembler.feed(unpack_chunk(frame))
        if not assembler.complete:
            return None
        self._upload = None
        parts = assembler.finish()
        return Upload(header, parts, self.is_held(header.job, header.attempt))

    def send(self, message: CoordinatorMessage) -> CoordinatorMessage:
        self._check(type(message), COORDINATOR_SENDS, "coordinator")
        self._apply_coordinator(message)
        return message

    def empty_upload(self) -> Upload | None:
        """An upload of zero bytes completes at its header (no chunk will follow)."""
        if self._upload is not None and self._upload[1].expected == 0:
            header, assembler = self._upload
            self._upload = None
            return Upload(header, assembler.finish(), self.is_held(header.job, header.attempt))
        return None


class AgentSession(_Session):
    """The agent's view of its connection to a coordinator."""

    def __init__(self) -> None:
        super().__init__()
        self.welcome: Welcome | None = None

    def send(self, message: AgentMessage) -> AgentMessage:
        self._check(type(message), AGENT_SENDS, "agent")
        if isinstance(message, Hello):
            self.held.update(message.holding)
        elif isinstance(message, Failed | Result):
            self.held.discard((message.job, message.attempt))
        self._settle_state()
        return message

    def receive(self, message: CoordinatorMessage) -> CoordinatorMessage:
        self._check(type(message), COORDINATOR_SENDS, "coordinator")
        if isinstance(message, Welcome):
            if message.version not in SUPPORTED_VERSIONS:
                raise ProtocolError(
                    f"coordinator chose unsupported version {message.version}",
                    code="version",
                    peer="coordinator",
                )
            self.welcome = message
        self._apply_coordinator(message)
        return message
