"""Shared helpers for the protocol tests: hypothesis strategies and a session pair.

The strategies are derived from the msgspec type information of the message
structs, so every field's bounds (lengths, ranges, patterns, literals) come
from :mod:`protocol.messages` itself and a new field is covered automatically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from protocol import (
    PROTOCOL_VERSION,
    AgentMessage,
    AgentSession,
    Assign,
    Capabilities,
    CoordinatorMessage,
    CoordinatorSession,
    Hello,
    JobSpec,
    Limits,
    Result,
    Upload,
    Welcome,
    decode_from_agent,
    decode_from_coordinator,
    describe,
    encode,
    iter_chunks,
)
from protocol.messages import (
    Accepted,
    Cancel,
    Declined,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Pause,
    Progress,
    ResultAck,
    Resume,
    Status,
)

AGENT_TYPES: tuple[type[msgspec.Struct], ...] = (
    Hello,
    Heartbeat,
    Accepted,
    Progress,
    Result,
    Failed,
    Status,
    Declined,
)
COORDINATOR_TYPES: tuple[type[msgspec.Struct], ...] = (
    Welcome,
    Assign,
    Cancel,
    ResultAck,
    Drain,
    Pause,
    Resume,
    Error,
)
ALL_TYPES = AGENT_TYPES + COORDINATOR_TYPES

# Collections are generated short: the bounds on their length are tested by hand.
_MAX_GENERATED_ITEMS = 4
_MAX_GENERATED_TEXT = 80


def strategy_for(info: mi.Type) -> st.SearchStrategy[Any]:
    """A strategy for valid values of one msgspec type, honouring its constraints."""
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else -(2**63))
        high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else 2**63)
        return st.integers(min_value=low, max_value=high)
    if isinstance(info, mi.FloatType):
        low_f = info.ge if info.ge is not None else info.gt
        high_f = info.le if info.le is not None else info.lt
        return st.floats(
            min_value=low_f,
            max_value=high_f,
            exclude_min=info.gt is not None,
            exclude_max=info.lt is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if isinstance(info, mi.StrType):
        low_n = info.min_length or 0
        high_n = info.max_length if info.max_length is not None else _MAX_GENERATED_TEXT
        if info.pattern is not None:
            return st.from_regex(info.pattern, fullmatch=True).filter(
                lambda s: low_n <= len(s) <= high_n
            )
        return st.text(min_size=low_n, max_size=min(high_n, max(low_n, _MAX_GENERATED_TEXT)))
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of(*(strategy_for(t) for t in info.types))
    if isinstance(info, mi.VarTupleType):
        low_i = info.min_length or 0
        high_i = info.max_length if info.max_length is not None else _MAX_GENERATED_ITEMS
        return st.lists(
            strategy_for(info.item_type),
            min_size=low_i,
            max_size=max(low_i, min(high_i, _MAX_GENERATED_ITEMS)),
        ).map(tuple)
    if isinstance(info, mi.TupleType):
        return st.tuples(*(strategy_for(t) for t in info.item_types))
    if isinstance(info, mi.StructType):
        required = {f.name: strategy_for(f.type) for f in info.fields if f.required}
        optional = {f.name: strategy_for(f.type) for f in info.fields if not f.required}
        return (
            st.fixed_dictionaries(required, optional=optional)
            .map(_builder(info.cls))
            .filter(lambda value: value is not None)
        )
    raise NotImplementedError(f"no strategy for {info!r}; extend strategy_for")


def _builder(cls: type[Any]) -> Any:
    """``cls(**kw)``, or None where a rule across fields (``__post_init__``) refuses them."""

    def build(kw: dict[str, Any]) -> Any:
        try:
            return cls(**kw)
        except ValueError:
            return None

    return build


def messages_of(kind: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    return strategy_for(mi.type_info(kind))


agent_messages: st.SearchStrategy[AgentMessage] = st.one_of(*map(messages_of, AGENT_TYPES))
coordinator_messages: st.SearchStrategy[CoordinatorMessage] = st.one_of(
    *map(messages_of, COORDINATOR_TYPES)
)
messages = st.one_of(agent_messages, coordinator_messages)


# --------------------------------------------------------------------------
# fixed sample values

SHA_EMPTY = hashlib.sha256(b"").hexdigest()

LIMITS = Limits(max_frame_bytes=1 << 20, max_result_bytes=1 << 16, chunk_bytes=1024)


def hello(**changes: Any) -> Hello:
    fields: dict[str, Any] = {
        "token": "tok",
        "versions": (PROTOCOL_VERSION,),
        "agent_version": "0.1.0",
        "capabilities": Capabilities(device="cuda", gpu_name="RTX", vram_mb=8192),
    }
    fields.update(changes)
    return Hello(**fields)


def welcome(**changes: Any) -> Welcome:
    fields: dict[str, Any] = {
        "agent_id": "agent-1",
        "version": PROTOCOL_VERSION,
        "heartbeat_s": 10.0,
        "lease_s": 60.0,
        "limits": LIMITS,
    }
    fields.update(changes)
    return Welcome(**fields)


def spec(job: str = "job-1", attempt: int = 1, **changes: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "job": job,
        "attempt": attempt,
        "prompt": "a red chair",
        "seed": 42,
        "guidance": 15.0,
        "steps": 64,
    }
    fields.update(changes)
    return JobSpec(**fields)


def result_for(
    job: str, attempt: int, parts: Sequence[tuple[str, bytes]], stream: int = 1
) -> Result:
    return Result(job=job, attempt=attempt, stream=stream, artifacts=describe(parts))


# One valid instance of every message type, for table-driven tests.
SAMPLES: dict[type[msgspec.Struct], msgspec.Struct] = {
    Hello: hello(),
    Heartbeat: Heartbeat(seq=1),
    Accepted: Accepted(job="job-1", attempt=1),
    Progress: Progress(job="job-1", attempt=1, stage="sampling", step=3, total=64),
    Result: result_for("job-1", 1, [("glb", b"glTF")]),
    Failed: Failed(job="job-1", attempt=1, reason="out of memory"),
    Welcome: welcome(),
    Assign: Assign(jobs=(spec(),)),
    Cancel: Cancel(job="job-1", attempt=1),
    ResultAck: ResultAck(job="job-1", attempt=1, status="stored"),
    Drain: Drain(reason="maintenance"),
    Error: Error(code="bad_message", message="nope"),
    Status: Status(paused=True, reason="outside working hours", prefer_users=("alice",)),
    Declined: Declined(job="job-1", attempt=1, reason="blocked"),
    Pause: Pause(cancel=True),
    Resume: Resume(),
}


# --------------------------------------------------------------------------
# a wired pair of sessions, in the manner of h11's tests/helpers.py ConnectionPair


class ConnectionPair:
    """An agent and a coordinator session wired through the real codec.

    Every message goes through the sender's ``send``, ``encode``, the
    direction-specific ``decode_from_*`` and the receiver's ``receive``, so a
    test exercises exactly what the I/O layers will do.
    """

    def __init__(self, max_result_bytes: int = LIMITS.max_result_bytes) -> None:
        self.agent = AgentSession()
        self.coordinator = CoordinatorSession(max_result_bytes)

    @property
    def states(self) -> tuple[str, str]:
        return self.agent.state.value, self.coordinator.state.value

    def agent_sends(self, message: AgentMessage) -> AgentMessage:
        self.agent.send(message)
        received = self.coordinator.receive(decode_from_agent(encode(message)))
        assert received == message
        return received

    def coordinator_sends(self, message: CoordinatorMessage) -> CoordinatorMessage:
        # What goes on the wire is what the session returns: the message as the
        # negotiated version has it (see protocol.messages.for_version).
        sent = self.coordinator.send(message)
        received = self.agent.receive(decode_from_coordinator(encode(sent)))
        assert received == sent
        return received

    def handshake(
        self, hello_message: Hello | None = None, welcome_message: Welcome | None = None
    ) -> None:
        self.agent_sends(hello_message or hello())
        self.coordinator_sends(welcome_message or welcome(version=self.coordinator.version))

    def upload(
        self, result: Result, data: bytes, chunk_bytes: int = LIMITS.chunk_bytes
    ) -> Upload | None:
        """Send a result header and its bytes; the coordinator's finished upload."""
        self.agent_sends(result)
        finished = self.coordinator.empty_upload()
        for frame in iter_chunks(result.stream, data, chunk_bytes):
            assert finished is None, "upload completed before its last chunk"
            finished = self.coordinator.receive_chunk(frame)
        return finished
