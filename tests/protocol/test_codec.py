"""Strict decoding: every malformed, out-of-bounds or misdirected message is a ProtocolError."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Accepted,
    Assign,
    Cancel,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Hello,
    Message,
    Progress,
    ProtocolError,
    Result,
    ResultAck,
    Welcome,
    decode,
    decode_from_agent,
    decode_from_coordinator,
    encode,
)
from protocol.codec import MAX_CONTROL_BYTES
from protocol.limits import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS
from protocol.session import message_type
from tests.support.protocol import AGENT_TYPES, ALL_TYPES, COORDINATOR_TYPES, SAMPLES, messages

PROPERTY = settings(max_examples=200, deadline=None)

HEX = "0" * 64


def document(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON object of the sample message of ``kind``, ready to be broken."""
    result: dict[str, Any] = json.loads(encode(SAMPLES[kind]))  # type: ignore[arg-type]
    return result


def decoder_for(kind: type[msgspec.Struct]) -> tuple[Callable[[str], object], str]:
    if kind in AGENT_TYPES:
        return decode_from_agent, "agent"
    return decode_from_coordinator, "coordinator"


def assert_rejected(
    data: str | bytes,
    decoder: Callable[[Any], object],
    code: str,
    peer: str | None,
) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decoder(data)
    assert info.value.code == code, str(info.value)
    assert info.value.peer == peer
    return info.value


def set_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``a.b.0.c`` in a nested document (integers index lists)."""
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


# (message type, field path, bad value): every bound in messages.py, one step past it.
OUT_OF_BOUNDS: list[tuple[type[msgspec.Struct], str, Any]] = [
    (Hello, "token", ""),
    (Hello, "token", "t" * 201),
    (Hello, "versions", []),
    (Hello, "versions", [1] * 17),
    (Hello, "versions", ["1"]),
    (Hello, "agent_version", "v" * 201),
    (Hello, "capabilities.max_batch", 0),
    (Hello, "capabilities.max_batch", 65),
    (Hello, "capabilities.max_steps", MAX_STEPS + 1),
    (Hello, "capabilities.vram_mb", -1),
    (Hello, "capabilities.vram_mb", 2**31 + 1),
    (Hello, "capabilities.formats", ["obj"]),
    (Hello, "capabilities.models", ["m" * 201]),
    (Hello, "capabilities.gpu_name", "g" * 201),
    (Hello, "holding", [["job-1", 1]] * 257),
    (Hello, "holding", [["bad id", 1]]),
    (Hello, "holding", [["job-1", 0]]),
    (Hello, "holding", [["job-1"]]),
    (Hello, "holding", [["job-1", 1, 2]]),
    (Heartbeat, "seq", -1),
    (Heartbeat, "seq", 2**31 + 1),
    (Heartbeat, "seq", "1"),
    (Heartbeat, "seq", 1.5),
    (Heartbeat, "seq", True),
    (Heartbeat, "seq", None),
    (Heartbeat, "running", ["job"] * 65),
    (Accepted, "job", ""),
    (Accepted, "job", "j" * 65),
    (Accepted, "job", "a/b"),
    (Accepted, "job", "../etc"),
    (Accepted, "job", "job 1"),
    (Accepted, "job", "jöb"),
    (Accepted, "job", 7),
    (Accepted, "attempt", 0),
    (Accepted, "attempt", 1001),
    (Progress, "stage", "thinking"),
    (Progress, "step", -1),
    (Progress, "total", 2**31 + 1),
    (Progress, "eta_s", -0.5),
    (Progress, "eta_s", 1e7 + 1),
    (Progress, "eta_s", "soon"),
    (Result, "stream", 0),
    (Result, "stream", 2**32),
    (Result, "artifacts", []),
    (Result, "artifacts", [{"kind": "glb", "size": 0, "sha256": HEX}] * 5),
    (Result, "artifacts.0.kind", "obj"),
    (Result, "artifacts.0.size", -1),
    (Result, "artifacts.0.size", 2**40 + 1),
    (Result, "artifacts.0.sha256", "A" * 64),
    (Result, "artifacts.0.sha256", "0" * 63),
    (Result, "artifacts.0.sha256", "0" * 65),
    (Result, "artifacts.0.sha256", "g" * 64),
    (Result, "artifacts.0.sha256", ""),
    (Result, "vertices", -1),
    (Result, "seconds", -1.0),
    (Failed, "reason", "r" * 2001),
    (Failed, "retryable", "yes"),
    (Failed, "retryable", 1),
    (Welcome, "agent_id", "agent 1"),
    (Welcome, "heartbeat_s", 0),
    (Welcome, "heartbeat_s", 3601),
    (Welcome, "lease_s", 0.0),
    (Welcome, "lease_s", 86401),
    (Welcome, "limits.chunk_bytes", -1),
    (Welcome, "limits.max_result_bytes", 2**40 + 1),
    (Welcome, "version", "1"),
    (Welcome, "approved", "true"),
    (Assign, "jobs", []),
    (
        Assign,
        "jobs",
        [{"job": "j", "attempt": 1, "prompt": "p", "seed": 0, "guidance": 1.0, "steps": 1}] * 65,
    ),
    (Assign, "jobs.0.prompt", ""),
    (Assign, "jobs.0.prompt", "p" * (MAX_PROMPT_CHARS + 1)),
    (Assign, "jobs.0.seed", -1),
    (Assign, "jobs.0.seed", MAX_SEED + 1),
    (Assign, "jobs.0.guidance", -0.1),
    (Assign, "jobs.0.guidance", MAX_GUIDANCE + 0.5),
    (Assign, "jobs.0.steps", 0),
    (Assign, "jobs.0.steps", MAX_STEPS + 1),
    (Assign, "jobs.0.model", "m" * 201),
    (Cancel, "reason", "r" * 2001),
    (Cancel, "attempt", 1001),
    (ResultAck, "status", "ok"),
    (ResultAck, "reason", "r" * 2001),
    (Drain, "reason", "r" * 2001),
    (Error, "code", "c" * 65),
    (Error, "message", "m" * 2001),
    (Error, "fatal", "no"),
]


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    OUT_OF_BOUNDS,
    ids=[f"{message_type(k)}.{p}={str(v)[:12]}" for k, p, v in OUT_OF_BOUNDS],
)
def test_decode_rejects_out_of_bounds_field(
    kind: type[msgspec.Struct], path: str, value: Any
) -> None:
    decoder, peer = decoder_for(kind)
    bad = json.dumps(set_path(document(kind), path, value))
    error = assert_rejected(bad, decoder, "bad_message", peer)
    # msgspec's message names the offending field, so the peer can fix itself.
    assert path.split(".")[-1] in str(error) or "$" in str(error)
    assert_rejected(bad, decode, "bad_message", None)


# Upper bounds are inclusive: the last legal value must pass.
AT_BOUNDS: list[tuple[type[msgspec.Struct], str, Any]] = [
    (Hello, "token", "t" * 200),
    (Hello, "versions", [1] * 16),
    (Hello, "holding", [["job-1", 1]] * 256),
    (Heartbeat, "seq", 2**31),
    (Heartbeat, "running", ["job"] * 64),
    (Accepted, "job", "j" * 64),
    (Accepted, "attempt", 1000),
    (Result, "stream", 2**32 - 1),
    (Result, "artifacts", [{"kind": "glb", "size": 2**40, "sha256": HEX}] * 4),
    (Failed, "reason", "r" * 2000),
    (Welcome, "heartbeat_s", 3600),
    (Welcome, "lease_s", 86400),
    (Assign, "jobs.0.prompt", "p" * MAX_PROMPT_CHARS),
    (Assign, "jobs.0.seed", MAX_SEED),
    (Assign, "jobs.0.guidance", MAX_GUIDANCE),
    (Assign, "jobs.0.guidance", 0),
    (Assign, "jobs.0.steps", MAX_STEPS),
    (Error, "code", "c" * 64),
]


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    AT_BOUNDS,
    ids=[f"{message_type(k)}.{p}" for k, p, _ in AT_BOUNDS],
)
def test_decode_accepts_value_at_bound(kind: type[msgspec.Struct], path: str, value: Any) -> None:
    decoder, _ = decoder_for(kind)
    assert type(decoder(json.dumps(set_path(document(kind), path, value)))) is kind


@pytest.mark.parametrize("number", ["1e400", "-1e400", "99999999999999999999999", "100.0000001"])
def test_decode_rejects_huge_number_literal(number: str) -> None:
    text = encode(SAMPLES[Assign]).replace('"guidance":15.0', f'"guidance":{number}')  # type: ignore[arg-type]
    assert number in text
    assert_rejected(text, decode_from_coordinator, "bad_message", "coordinator")


@pytest.mark.parametrize("kind", ALL_TYPES, ids=message_type)
def test_decode_rejects_unknown_top_level_field(kind: type[msgspec.Struct]) -> None:
    decoder, peer = decoder_for(kind)
    doc = document(kind)
    doc["surprise"] = 1
    error = assert_rejected(json.dumps(doc), decoder, "bad_message", peer)
    assert "surprise" in str(error)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (Hello, "capabilities"),
        (Result, "artifacts.0"),
        (Welcome, "limits"),
        (Assign, "jobs.0"),
    ],
)
def test_decode_rejects_unknown_nested_field(kind: type[msgspec.Struct], path: str) -> None:
    decoder, peer = decoder_for(kind)
    doc = document(kind)
    *parents, last = path.split(".")
    node: Any = doc
    for key in [*parents, last]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node["surprise"] = True
    assert_rejected(json.dumps(doc), decoder, "bad_message", peer)


@pytest.mark.parametrize("kind", ALL_TYPES, ids=message_type)
def test_decode_rejects_missing_required_field(kind: type[msgspec.Struct]) -> None:
    decoder, peer = decoder_for(kind)
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if field.required:
            doc = document(kind)
            del doc[field.name]
            error = assert_rejected(json.dumps(doc), decoder, "bad_message", peer)
            assert field.name in str(error)


@pytest.mark.parametrize(
    "text",
    [
        '{"seq": 1}',
        '{"type": "ping"}',
        '{"type": "HELLO"}',
        '{"type": 3}',
        '{"type": null}',
        "[]",
        '["heartbeat", 1]',
        '"heartbeat"',
        "1",
        "null",
        "true",
    ],
)
def test_decode_rejects_unknown_or_missing_type(text: str) -> None:
    assert_rejected(text, decode, "bad_message", None)
    assert_rejected(text, decode_from_agent, "bad_message", "agent")
    assert_rejected(text, decode_from_coordinator, "bad_message", "coordinator")


@pytest.mark.parametrize(
    "data",
    [
        "",
        " ",
        "{",
        '{"type": "heartbeat", "seq": 1',
        "{'type': 'heartbeat', 'seq': 1}",
        '{"type": "heartbeat", "seq": 1}}',
        '{"type": "heartbeat", "seq": 1} x',
        '{"type": "progress", "job": "j", "attempt": 1, "stage": "loading", "step": 0,'
        ' "total": 0, "eta_s": NaN}',
        '{"type": "heartbeat", "seq": 01}',
        b"\xff\xfe",
        b'{"type": "drain", "reason": "\xc3"}',
        "\ud800",
        '{"type": "drain", "reason": "\ud800"}',
    ],
    ids=repr,
)
def test_decode_rejects_malformed_json(data: str | bytes) -> None:
    assert_rejected(data, decode, "bad_json", None)
    # The parser streams: a directional decoder may stop at a wrong-direction
    # ``type`` before it reaches the syntax error, so either code is right there.
    for decoder, peer in [(decode_from_agent, "agent"), (decode_from_coordinator, "coordinator")]:
        with pytest.raises(ProtocolError) as info:
            decoder(data)
        assert info.value.code in {"bad_json", "bad_message"}
        assert info.value.peer == peer


@pytest.mark.parametrize("where", ["before_type", "after_type"])
def test_decode_rejects_deep_nesting_without_recursion_error(where: str) -> None:
    nested = "[" * 5000 + "]" * 5000
    text = (
        f'{{"x": {nested}, "type": "heartbeat", "seq": 1}}'
        if where == "before_type"
        else f'{{"type": "heartbeat", "seq": 1, "x": {nested}}}'
    )
    with pytest.raises(ProtocolError) as info:
        decode_from_agent(text)
    assert info.value.code in {"bad_json", "bad_message"}
    assert info.value.peer == "agent"


@pytest.mark.parametrize("kind", COORDINATOR_TYPES, ids=message_type)
def test_decode_from_agent_rejects_coordinator_only_type(kind: type[msgspec.Struct]) -> None:
    text = encode(SAMPLES[kind])  # type: ignore[arg-type]
    assert_rejected(text, decode_from_agent, "bad_message", "agent")
    assert type(decode(text)) is kind


@pytest.mark.parametrize("kind", AGENT_TYPES, ids=message_type)
def test_decode_from_coordinator_rejects_agent_only_type(kind: type[msgspec.Struct]) -> None:
    text = encode(SAMPLES[kind])  # type: ignore[arg-type]
    assert_rejected(text, decode_from_coordinator, "bad_message", "coordinator")
    assert type(decode(text)) is kind


def _padded_drain(total: int) -> str:
    """A syntactically valid drain message of exactly ``total`` characters."""
    head, tail = '{"type":"drain","reason":"', '"}'
    return head + "r" * (total - len(head) - len(tail)) + tail


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_decode_rejects_over_max_control_bytes(as_bytes: bool) -> None:
    text = _padded_drain(MAX_CONTROL_BYTES + 1)
    data: str | bytes = text.encode() if as_bytes else text
    assert len(data) == MAX_CONTROL_BYTES + 1
    assert_rejected(data, decode, "too_big", None)
    assert_rejected(data, decode_from_agent, "too_big", "agent")
    assert_rejected(data, decode_from_coordinator, "too_big", "coordinator")


def test_decode_size_limit_is_inclusive() -> None:
    # Exactly MAX_CONTROL_BYTES passes the size check and fails only on the field bound.
    assert_rejected(_padded_drain(MAX_CONTROL_BYTES), decode, "bad_message", None)


def test_decode_limit_counts_utf8_bytes_of_text() -> None:
    head, tail = '{"type":"drain","reason":"', '"}'
    text = head + "\u00e9" * (MAX_CONTROL_BYTES // 2) + tail  # 2 bytes per character
    assert len(text) <= MAX_CONTROL_BYTES < len(text.encode())
    assert_rejected(text, decode, "too_big", None)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [(Accepted, "job", "job-1\n"), (Result, "artifacts.0.sha256", HEX + "\n")],
)
def test_decode_rejects_trailing_newline_in_patterned_field(
    kind: type[msgspec.Struct], path: str, value: str
) -> None:
    decoder, peer = decoder_for(kind)
    assert_rejected(json.dumps(set_path(document(kind), path, value)), decoder, "bad_message", peer)


def test_protocol_error_str_names_the_peer() -> None:
    error = ProtocolError("nope", code="bad_json", peer="agent")
    assert str(error) == "agent broke the protocol: nope"
    assert str(ProtocolError("nope")) == "nope"
    assert ProtocolError("nope").code == "bad_message"


# --------------------------------------------------------------------------
# properties: nothing but ProtocolError ever escapes, whatever arrives

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
type_names = st.sampled_from(sorted(message_type(k) for k in ALL_TYPES)) | st.text(max_size=12)

DECODERS: list[Callable[[Any], object]] = [decode, decode_from_agent, decode_from_coordinator]


def _decodes_or_protocol_error(data: str | bytes) -> None:
    for decoder in DECODERS:
        try:
            message = decoder(data)
        except ProtocolError as exc:
            assert exc.code in {"bad_message", "bad_json", "too_big"}
        else:
            # Whatever is accepted is a real message that survives a round-trip.
            assert decode(encode(message)) == message  # type: ignore[arg-type]


@PROPERTY
@given(st.text())
def test_decode_arbitrary_text_raises_only_protocol_error(text: str) -> None:
    _decodes_or_protocol_error(text)


@PROPERTY
@given(st.binary())
def test_decode_arbitrary_bytes_raises_only_protocol_error(data: bytes) -> None:
    _decodes_or_protocol_error(data)


@PROPERTY
@given(json_values)
def test_decode_arbitrary_json_raises_only_protocol_error(value: Any) -> None:
    _decodes_or_protocol_error(json.dumps(value))


@PROPERTY
@given(messages, st.data())
def test_decode_mutated_message_raises_only_protocol_error(message: Message, data: Any) -> None:
    doc = json.loads(encode(message))
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = data.draw(json_values | type_names)
    _decodes_or_protocol_error(json.dumps(doc))


@PROPERTY
@given(messages, st.text(min_size=1, max_size=10), json_values)
def test_decode_any_extra_field_is_rejected(message: Message, key: str, value: Any) -> None:
    doc = json.loads(encode(message))
    if key in doc:
        return
    doc[key] = value
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(doc))
    assert info.value.code == "bad_message"


@PROPERTY
@given(messages, st.integers(min_value=1, max_value=200))
def test_decode_truncated_message_is_rejected(message: Message, cut: int) -> None:
    text = encode(message)
    truncated = text[: max(0, len(text) - cut)]
    with pytest.raises(ProtocolError) as info:
        decode(truncated)
    assert info.value.code in {"bad_json", "bad_message"}
