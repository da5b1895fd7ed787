"""The message structs: wire names, direction unions, round-trips of every type."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings

from protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    AgentMessage,
    Capabilities,
    CoordinatorMessage,
    Failed,
    Message,
    decode,
    decode_from_agent,
    decode_from_coordinator,
    encode,
)
from protocol.codec import MAX_CONTROL_BYTES
from protocol.session import AGENT_SENDS, COORDINATOR_SENDS, message_type
from tests.support.protocol import (
    AGENT_TYPES,
    ALL_TYPES,
    COORDINATOR_TYPES,
    SAMPLES,
    agent_messages,
    coordinator_messages,
    hello,
    messages,
)

WIRE_TYPES = {
    "hello",
    "heartbeat",
    "accepted",
    "progress",
    "result",
    "failed",
    "status",
    "declined",
    "pause",
    "resume",
    "welcome",
    "assign",
    "cancel",
    "result_ack",
    "drain",
    "error",
}

PROPERTY = settings(max_examples=150, deadline=None)


def test_message_wire_types_are_the_documented_set() -> None:
    # docs/protocol.md lists exactly these; a rename is a protocol version bump.
    assert {message_type(kind) for kind in ALL_TYPES} == WIRE_TYPES
    assert len(WIRE_TYPES) == len(ALL_TYPES)


def test_message_unions_partition_the_types_by_direction() -> None:
    assert set(typing.get_args(AgentMessage)) == set(AGENT_TYPES)
    assert set(typing.get_args(CoordinatorMessage)) == set(COORDINATOR_TYPES)
    assert set(typing.get_args(Message)) == set(ALL_TYPES)
    assert not set(AGENT_TYPES) & set(COORDINATOR_TYPES)


def test_message_session_tables_cover_each_direction_exactly() -> None:
    assert set(AGENT_SENDS) == set(AGENT_TYPES)
    assert set(COORDINATOR_SENDS) == set(COORDINATOR_TYPES)


def test_message_structs_are_frozen_and_forbid_unknown_fields() -> None:
    for kind in ALL_TYPES:
        config = kind.__struct_config__
        assert config.frozen, kind
        assert config.forbid_unknown_fields, kind
        assert config.tag_field == "type", kind


def test_message_version_is_supported() -> None:
    assert PROTOCOL_VERSION in SUPPORTED_VERSIONS


@pytest.mark.parametrize("kind", ALL_TYPES, ids=message_type)
def test_message_sample_round_trips(kind: type[msgspec.Struct]) -> None:
    message = SAMPLES[kind]
    text = encode(message)  # type: ignore[arg-type]
    assert isinstance(text, str)
    assert json.loads(text)["type"] == message_type(kind)
    assert decode(text) == message
    assert decode(text.encode()) == message
    side = decode_from_agent if kind in AGENT_TYPES else decode_from_coordinator
    assert side(text) == message


@pytest.mark.parametrize("kind", ALL_TYPES, ids=message_type)
def test_message_optional_fields_may_be_omitted(kind: type[msgspec.Struct]) -> None:
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    document = json.loads(encode(SAMPLES[kind]))  # type: ignore[arg-type]
    for field in info.fields:
        if not field.required:
            del document[field.name]
    decoded = decode(json.dumps(document))
    assert type(decoded) is kind


def test_message_defaults_are_conservative() -> None:
    caps = Capabilities()
    assert (caps.device, caps.max_batch, caps.formats) == ("cpu", 1, ("glb",))
    assert Failed(job="j", attempt=1, reason="x").retryable is True


def test_message_holding_travels_as_pairs() -> None:
    with_holding = hello(holding=(("job-1", 2), ("job-2", 1)))
    document = json.loads(encode(with_holding))
    assert document["holding"] == [["job-1", 2], ["job-2", 1]]
    assert decode_from_agent(json.dumps(document)) == with_holding


@PROPERTY
@given(messages)
def test_message_generated_round_trips(message: Message) -> None:
    text = encode(message)
    assert decode(text) == message
    assert decode(text.encode("utf-8")) == message


@PROPERTY
@given(agent_messages)
def test_message_generated_agent_messages_decode_from_agent(message: AgentMessage) -> None:
    assert decode_from_agent(encode(message)) == message


@PROPERTY
@given(coordinator_messages)
def test_message_generated_coordinator_messages_decode_from_coordinator(
    message: CoordinatorMessage,
) -> None:
    assert decode_from_coordinator(encode(message)) == message


DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@pytest.mark.parametrize("kind", ALL_TYPES, ids=message_type)
def test_message_docs_describe_every_type_and_field(kind: type[msgspec.Struct]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"#### `{message_type(kind)}`" in text
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        assert f"`{field.name}`" in text, f"docs/protocol.md misses {kind.__name__}.{field.name}"


def test_message_docs_state_the_size_limit() -> None:
    (line,) = [
        ln for ln in DOCS.read_text(encoding="utf-8").splitlines() if "`MAX_CONTROL_BYTES`" in ln
    ]
    assert str(MAX_CONTROL_BYTES) in line.replace(" ", "")
