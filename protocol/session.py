"""Sans-I/O state machines for both ends of an agent connection.

The I/O layer feeds decoded messages (and binary frames) in and sends what the
machine approves; every illegal step raises :class:`ProtocolError` naming the
peer that broke the rules. States::

    handshake ──hello/welcome──▶ ready ◀──▶ busy ──drain──▶ draining ──▶ closed

``busy`` is ``ready`` with at least one job held; ``draining`` finishes held
jobs but takes no new ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import msgspec

from protocol.errors import Peer, ProtocolError
from protocol.frames import Assembler, BufferSink, Sink, split, unpack_chunk
from protocol.images import ImageInbox
from protocol.messages import (
    IMAGE_JOBS_SINCE,
    SINCE_VERSION,
    SUPPORTED_VERSIONS,
    Accepted,
    AgentMessage,
    Assign,
    Cancel,
    CoordinatorMessage,
    Declined,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Hello,
    Pause,
    Progress,
    Result,
    ResultAck,
    Resume,
    Status,
    Welcome,
    for_version,
)


class State(Enum):
    HANDSHAKE = "handshake"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    CLOSED = "closed"


# How many ended assignments a coordinator session remembers (far above any batch).
ENDED_REMEMBERED = 1024
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
    Status: _OPEN,
    Declined: _OPEN,
}
COORDINATOR_SENDS: dict[type, frozenset[State]] = {
    Welcome: frozenset({State.HANDSHAKE}),
    Assign: _ACTIVE,
    Cancel: _OPEN,
    ResultAck: _OPEN,
    Drain: _OPEN,
    Pause: _OPEN,
    Resume: _OPEN,
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
    """A finished, checksum-verified upload.

    ``sink`` holds the bytes; it is None when the header named an assignment
    this session did not hold: such bytes are counted, checked and dropped, so
    only the (job, attempt) is left to answer. ``held`` is False for a stale
    attempt (also one cancelled during its upload, whose bytes did land in a
    sink).
    """

    result: Result
    sink: Sink | None
    held: bool

    @property
    def parts(self) -> list[bytes]:
        """The artifacts' bytes, for an upload received into a :class:`BufferSink`."""
        if not isinstance(self.sink, BufferSink):
            raise TypeError("only an upload into a BufferSink keeps its bytes in memory")
        return split(self.sink.data, self.result.artifacts)


def _buffer(_: Result) -> Sink:
    return BufferSink()


class _Session:
    def __init__(self) -> None:
        self.state = State.HANDSHAKE
        self.held: set[JobKey] = set()
        self.version: int | None = None  # negotiated at hello/welcome

    def _check(
        self, kind: type[msgspec.Struct], table: dict[type, frozenset[State]], peer: Peer
    ) -> None:
        name = message_type(kind)
        if self.state not in table.get(kind, frozenset()):
            raise ProtocolError(
                f"'{name}' is not allowed in state '{self.state.value}'",
                code="out_of_order",
                peer=peer,
            )
        since = SINCE_VERSION.get(name, 1)
        if (self.version or 1) < since:
            raise ProtocolError(
                f"'{name}' needs protocol version {since}; this connection speaks "
                f"{self.version or 1}",
                code="out_of_order",
                peer=peer,
            )

    def _check_assign(self, message: CoordinatorMessage) -> None:
        """(v3) Only a version-3 connection may carry image jobs."""
        if (
            isinstance(message, Assign)
            and not self.speaks(IMAGE_JOBS_SINCE)
            and any(spec.kind != "text" or spec.image is not None for spec in message.jobs)
        ):
            raise ProtocolError(
                f"an image job needs protocol version {IMAGE_JOBS_SINCE}; this "
                f"connection speaks {self.version or 1}",
                code="version",
                peer="coordinator",
            )

    def speaks(self, version: int) -> bool:
        """Whether the negotiated version is at least ``version``."""
        return (self.version or 1) >= version

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

    def adopt(self, job: str, attempt: int) -> None:
        """Count a job the peer says it still holds from an earlier connection as held
        (the coordinator checked that the lease is still this agent's)."""
        self.held.add((job, attempt))
        self._settle_state()

    def release(self, job: str, attempt: int) -> None:
        """Forget a job the coordinator has settled (succeeded, failed or cancelled)."""
        self.held.discard((job, attempt))
        self._settle_state()

    def close(self) -> None:
        self.state = State.CLOSED


class CoordinatorSession(_Session):
    """The coordinator's view of one agent connection.

    ``open_sink`` is called for the header of an upload of a held assignment
    and returns where its bytes go; a server passes one that writes a temp
    file. Bytes of an upload this session does not hold go nowhere.
    """

    def __init__(
        self, max_result_bytes: int, open_sink: Callable[[Result], Sink] = _buffer
    ) -> None:
        super().__init__()
        self.max_result_bytes = max_result_bytes
        self.open_sink = open_sink
        self._upload: tuple[Result, Assembler] | None = None
        # The last assignments this connection ended (result, failure, decline), oldest
        # first: the database may still say "claimed" for a moment after, and such an
        # assignment must never be sent to the agent again.
        self._ended: dict[tuple[str, int], None] = {}

    def release(self, job: str, attempt: int) -> None:
        super().release(job, attempt)
        self._ended[(job, attempt)] = None
        if len(self._ended) > ENDED_REMEMBERED:
            del self._ended[next(iter(self._ended))]

    def ended(self, job: str, attempt: int) -> bool:
        """This connection already ended that assignment (it is not to be sent again)."""
        return (job, attempt) in self._ended

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
            # Checked before a sink exists: a refused header leaves nothing behind.
            assembler = Assembler(message.stream, message.artifacts, self.max_result_bytes)
            if self.is_held(message.job, message.attempt):
                assembler.sink = self.open_sink(message)
            self._upload = (message, assembler)
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
        assembler = self._upload[1]
        try:
            chunk = unpack_chunk(frame)
        except ProtocolError:
            self.abort_upload()
            raise
        try:
            assembler.feed(chunk)
        except ProtocolError:
            self._upload = None
            raise
        if not assembler.complete:
            return None
        return self._finish()

    def _finish(self) -> Upload:
        assert self._upload is not None
        header, assembler = self._upload
        self._upload = None
        sink = assembler.sink
        assembler.finish()
        return Upload(header, sink, self.is_held(header.job, header.attempt))

    def abort_upload(self) -> None:
        """Drop an upload in progress (its sink discards its bytes)."""
        if self._upload is not None:
            self._upload[1].abort()
            self._upload = None

    def send(self, message: CoordinatorMessage) -> CoordinatorMessage:
        """Check and apply ``message``; returns it as this peer's version may receive it
        (send that, not the original: see :func:`protocol.messages.for_version`)."""
        self._check(type(message), COORDINATOR_SENDS, "coordinator")
        self._check_assign(message)
        self._apply_coordinator(message)
        return for_version(message, self.version or 1)

    def empty_upload(self) -> Upload | None:
        """An upload of zero bytes completes at its header (no chunk will follow)."""
        if self._upload is not None and self._upload[1].expected == 0:
            return self._finish()
        return None

    def close(self) -> None:
        self.abort_upload()
        super().close()


class AgentSession(_Session):
    """The agent's view of its connection to a coordinator."""

    def __init__(self) -> None:
        super().__init__()
        self.welcome: Welcome | None = None
        self.offered: tuple[int, ...] = SUPPORTED_VERSIONS
        # (v3) An assign whose input image is still arriving, and its receiver.
        self._image: tuple[Assign, ImageInbox] | None = None

    def send(self, message: AgentMessage) -> AgentMessage:
        self._check(type(message), AGENT_SENDS, "agent")
        if isinstance(message, Hello):
            self.held.update(message.holding)
            self.offered = message.versions
        elif isinstance(message, Failed | Result | Declined):
            self.held.discard((message.job, message.attempt))
        self._settle_state()
        return message

    @property
    def awaiting_image(self) -> Assign | None:
        """The assign whose input image has not fully arrived yet, if any."""
        return self._image[0] if self._image is not None else None

    def receive_image(self, frame: bytes) -> tuple[Assign, bytes | None] | None:
        """(v3) Feed one binary frame of the pending assign's image.

        Returns the assign with the verified image bytes once they are complete
        (None for the bytes if their sha256 is not the announced one), else None.
        """
        if self._image is None:
            raise ProtocolError(
                "binary frame without an assign awaiting its image",
                code="out_of_order",
                peer="coordinator",
            )
        assign, inbox = self._image
        try:
            if not inbox.feed(frame):
                return None
        except ProtocolError:
            self._image = None
            raise
        self._image = None
        return assign, inbox.finish()

    def receive(self, message: CoordinatorMessage) -> CoordinatorMessage:
        self._check(type(message), COORDINATOR_SENDS, "coordinator")
        if self._image is not None:
            raise ProtocolError(
                f"'{message_type(type(message))}' arrived before the image of the assign "
                "it follows was complete",
                code="out_of_order",
                peer="coordinator",
            )
        self._check_assign(message)
        if isinstance(message, Assign) and message.image is not None:
            self._image = (message, ImageInbox(message.image))
        if isinstance(message, Welcome):
            if message.version not in SUPPORTED_VERSIONS or message.version not in self.offered:
                raise ProtocolError(
                    f"coordinator chose unsupported version {message.version}",
                    code="version",
                    peer="coordinator",
                )
            self.welcome = message
            self.version = message.version
        self._apply_coordinator(message)
        return message
