"""The sans-I/O session machines on both ends, driven through the real codec."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Accepted,
    AgentSession,
    Artifact,
    Assign,
    BufferSink,
    Cancel,
    CoordinatorSession,
    Declined,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Hello,
    MeshOptions,
    Pause,
    Progress,
    ProtocolError,
    Result,
    ResultAck,
    Resume,
    State,
    Status,
    Welcome,
    encode,
    iter_chunks,
    negotiate,
    pack_chunk,
)
from protocol.session import AGENT_SENDS, COORDINATOR_SENDS, ENDED_REMEMBERED, message_type
from tests.support.protocol import (
    SAMPLES,
    SHA_EMPTY,
    ConnectionPair,
    hello,
    result_for,
    spec,
    welcome,
)

GLB = b"glTF" + bytes(range(256)) * 8


def busy_pair(*jobs: tuple[str, int]) -> ConnectionPair:
    pair = ConnectionPair()
    pair.handshake()
    pair.coordinator_sends(Assign(jobs=tuple(spec(job, attempt) for job, attempt in jobs)))
    return pair


def put_in_state(session: AgentSession | CoordinatorSession, state: State) -> None:
    session.state = state
    if state is not State.HANDSHAKE:
        session.version = SUPPORTED_VERSIONS[-1]  # past the handshake: negotiated
    if state is State.BUSY:
        session.held.add(("job-9", 1))


def raises_out_of_order(peer: str) -> Any:
    return pytest.raises(ProtocolError, check=lambda e: e.code == "out_of_order" and e.peer == peer)


# --------------------------------------------------------------------------
# legal paths


def test_session_starts_in_handshake() -> None:
    pair = ConnectionPair()
    assert pair.states == ("handshake", "handshake")
    assert pair.coordinator.version is None and pair.agent.welcome is None


def test_session_handshake_makes_both_ready() -> None:
    pair = ConnectionPair()
    pair.agent_sends(hello())
    assert pair.coordinator.version == PROTOCOL_VERSION == 3
    assert pair.states == ("handshake", "handshake")
    pair.coordinator_sends(welcome())
    assert pair.states == ("ready", "ready")
    assert pair.agent.welcome == welcome()


def test_session_job_runs_ready_busy_ready() -> None:
    pair = busy_pair(("job-1", 1))
    assert pair.states == ("busy", "busy")
    pair.agent_sends(Accepted(job="job-1", attempt=1))
    for step in range(1, 4):
        pair.agent_sends(Progress(job="job-1", attempt=1, stage="sampling", step=step, total=3))
    pair.agent_sends(Heartbeat(seq=1, running=("job-1",)))
    result = result_for("job-1", 1, [("glb", GLB)])
    upload = pair.upload(result, GLB, chunk_bytes=500)
    assert upload is not None and upload.held and upload.parts == [GLB]
    assert upload.result == result
    # The agent forgets the job once its result is sent; the coordinator when it settles it.
    assert pair.states == ("ready", "busy")
    pair.coordinator_sends(ResultAck(job="job-1", attempt=1, status="stored"))
    pair.coordinator.release("job-1", 1)
    assert pair.states == ("ready", "ready")
    assert pair.agent.held == pair.coordinator.held == set()


def test_session_failed_job_frees_the_agent() -> None:
    pair = busy_pair(("job-1", 1))
    pair.agent_sends(Failed(job="job-1", attempt=1, reason="CUDA out of memory"))
    pair.coordinator.release("job-1", 1)
    assert pair.states == ("ready", "ready")


def test_session_batch_stays_busy_until_every_job_is_settled() -> None:
    pair = busy_pair(("job-1", 1), ("job-2", 3))
    assert pair.agent.held == pair.coordinator.held == {("job-1", 1), ("job-2", 3)}
    pair.agent_sends(Failed(job="job-1", attempt=1, reason="bad mesh", retryable=False))
    pair.coordinator.release("job-1", 1)
    assert pair.states == ("busy", "busy")
    pair.agent_sends(Failed(job="job-2", attempt=3, reason="bad mesh"))
    pair.coordinator.release("job-2", 3)
    assert pair.states == ("ready", "ready")


def test_session_cancel_frees_both_sides() -> None:
    pair = busy_pair(("job-1", 1))
    pair.coordinator_sends(Cancel(job="job-1", attempt=1, reason="user cancelled"))
    assert pair.states == ("ready", "ready")


def test_session_assign_while_busy_adds_jobs() -> None:
    pair = busy_pair(("job-1", 1))
    pair.coordinator_sends(Assign(jobs=(spec("job-2", 1),)))
    assert pair.agent.held == {("job-1", 1), ("job-2", 1)}


def test_session_adopted_job_is_held_after_the_welcome() -> None:
    # A reconnecting agent names a job it still holds; the coordinator adopts it
    # before its welcome, and the session is busy with it from then on.
    pair = ConnectionPair()
    pair.agent_sends(hello())
    pair.coordinator.adopt("job-1", 2)
    assert pair.states[1] == "handshake"
    pair.coordinator_sends(welcome())
    assert pair.states[1] == "busy" and pair.coordinator.is_held("job-1", 2)
    pair.coordinator.release("job-1", 2)
    assert pair.states[1] == "ready"


def test_session_remembers_what_it_ended_within_a_bound() -> None:
    # A released assignment is not to be delivered again (its row may still say
    # "claimed" for a moment); the memory of them is bounded per connection.
    pair = busy_pair(("job-1", 1), ("job-2", 1))
    pair.coordinator.release("job-1", 1)
    assert pair.coordinator.ended("job-1", 1)
    assert not pair.coordinator.ended("job-1", 2) and not pair.coordinator.ended("job-2", 1)
    for n in range(ENDED_REMEMBERED):
        pair.coordinator.release(f"other-{n}", 1)
    assert not pair.coordinator.ended("job-1", 1)  # the oldest went first
    assert pair.coordinator.ended(f"other-{ENDED_REMEMBERED - 1}", 1)
    assert len(pair.coordinator._ended) == ENDED_REMEMBERED


def test_session_release_of_unknown_job_is_harmless() -> None:
    pair = busy_pair(("job-1", 1))
    pair.coordinator.release("job-7", 1)
    assert pair.states == ("busy", "busy")


def test_session_drain_while_busy_lets_held_jobs_finish() -> None:
    pair = busy_pair(("job-1", 1))
    pair.coordinator_sends(Drain(reason="maintenance"))
    assert pair.states == ("draining", "draining")
    pair.agent_sends(Heartbeat(seq=2, running=("job-1",)))
    pair.agent_sends(Progress(job="job-1", attempt=1, stage="exporting", step=1, total=1))
    upload = pair.upload(result_for("job-1", 1, [("glb", GLB)]), GLB)
    assert upload is not None and upload.held
    pair.coordinator_sends(ResultAck(job="job-1", attempt=1, status="stored"))
    pair.coordinator.release("job-1", 1)
    # Draining is sticky: no way back to ready on this connection.
    assert pair.states == ("draining", "draining")
    with raises_out_of_order("coordinator"):
        pair.coordinator.send(Assign(jobs=(spec("job-2", 1),)))
    with raises_out_of_order("coordinator"):
        pair.agent.receive(Assign(jobs=(spec("job-2", 1),)))
    pair.agent.close()
    pair.coordinator.close()
    assert pair.states == ("closed", "closed")


def test_session_drain_when_idle() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.coordinator_sends(Drain())
    assert pair.states == ("draining", "draining")
    pair.coordinator_sends(Cancel(job="job-1", attempt=1))  # still allowed while draining


def test_session_error_may_answer_hello() -> None:
    pair = ConnectionPair()
    pair.agent_sends(hello())
    pair.coordinator_sends(Error(code="bad_token", message="unknown agent token", fatal=True))
    assert pair.states == ("handshake", "handshake")


def test_session_error_is_allowed_in_every_open_state() -> None:
    pair = busy_pair(("job-1", 1))
    pair.coordinator_sends(Error(code="bad_message", message="ignored a progress"))
    pair.coordinator_sends(Drain())
    pair.coordinator_sends(Error(code="bad_message", message="still fine"))


def test_session_agent_holding_spooled_jobs_starts_busy() -> None:
    pair = ConnectionPair()
    pair.handshake(hello(holding=(("job-1", 2),)))
    assert pair.agent.state is State.BUSY
    assert pair.agent.held == {("job-1", 2)}


def test_session_closed_refuses_everything() -> None:
    pair = busy_pair(("job-1", 1))
    pair.agent.close()
    pair.coordinator.close()
    for kind in AGENT_SENDS:
        with raises_out_of_order("agent"):
            pair.coordinator.receive(SAMPLES[kind])  # type: ignore[arg-type]
    for kind in COORDINATOR_SENDS:
        with raises_out_of_order("coordinator"):
            pair.agent.receive(SAMPLES[kind])  # type: ignore[arg-type]
    with raises_out_of_order("agent"):
        pair.coordinator.receive_chunk(pack_chunk(1, 0, b"x"))


# --------------------------------------------------------------------------
# every illegal (state, message) pair, from the tables themselves


def _pairs(table: dict[type, frozenset[State]], legal: bool) -> list[tuple[State, type]]:
    return [(state, kind) for kind in table for state in State if (state in table[kind]) == legal]


def _ids(pairs: list[tuple[State, type]]) -> list[str]:
    return [f"{state.value}-{message_type(kind)}" for state, kind in pairs]


ILLEGAL_FROM_AGENT = _pairs(AGENT_SENDS, legal=False)
LEGAL_FROM_AGENT = _pairs(AGENT_SENDS, legal=True)
ILLEGAL_FROM_COORDINATOR = _pairs(COORDINATOR_SENDS, legal=False)
LEGAL_FROM_COORDINATOR = _pairs(COORDINATOR_SENDS, legal=True)


def test_session_tables_match_the_documented_rules() -> None:
    open_states = {State.READY, State.BUSY, State.DRAINING}
    assert AGENT_SENDS[Hello] == {State.HANDSHAKE}
    assert all(AGENT_SENDS[k] == open_states for k in AGENT_SENDS if k is not Hello)
    assert COORDINATOR_SENDS[Welcome] == {State.HANDSHAKE}
    assert COORDINATOR_SENDS[Assign] == {State.READY, State.BUSY}
    assert COORDINATOR_SENDS[Cancel] == COORDINATOR_SENDS[ResultAck] == open_states
    assert COORDINATOR_SENDS[Drain] == open_states
    assert COORDINATOR_SENDS[Error] == set(State) - {State.CLOSED}


@pytest.mark.parametrize(("state", "kind"), ILLEGAL_FROM_AGENT, ids=_ids(ILLEGAL_FROM_AGENT))
def test_session_illegal_agent_message_names_agent(state: State, kind: type) -> None:
    coordinator = CoordinatorSession(1 << 20)
    put_in_state(coordinator, state)
    with raises_out_of_order("agent") as info:
        coordinator.receive(SAMPLES[kind])  # type: ignore[arg-type]
    assert message_type(kind) in str(info.value) and state.value in str(info.value)
    assert coordinator.state is state
    # The agent's own machine refuses to send it in the first place.
    agent = AgentSession()
    put_in_state(agent, state)
    with raises_out_of_order("agent"):
        agent.send(SAMPLES[kind])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "kind"), ILLEGAL_FROM_COORDINATOR, ids=_ids(ILLEGAL_FROM_COORDINATOR)
)
def test_session_illegal_coordinator_message_names_coordinator(state: State, kind: type) -> None:
    agent = AgentSession()
    put_in_state(agent, state)
    with raises_out_of_order("coordinator") as info:
        agent.receive(SAMPLES[kind])  # type: ignore[arg-type]
    assert message_type(kind) in str(info.value) and state.value in str(info.value)
    assert agent.state is state
    coordinator = CoordinatorSession(1 << 20)
    put_in_state(coordinator, state)
    with raises_out_of_order("coordinator"):
        coordinator.send(SAMPLES[kind])  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "kind"), LEGAL_FROM_AGENT, ids=_ids(LEGAL_FROM_AGENT))
def test_session_legal_agent_message_is_accepted(state: State, kind: type) -> None:
    coordinator = CoordinatorSession(1 << 20)
    put_in_state(coordinator, state)
    assert coordinator.receive(SAMPLES[kind]) is SAMPLES[kind]  # type: ignore[arg-type]
    agent = AgentSession()
    put_in_state(agent, state)
    assert agent.send(SAMPLES[kind]) is SAMPLES[kind]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "kind"), LEGAL_FROM_COORDINATOR, ids=_ids(LEGAL_FROM_COORDINATOR)
)
def test_session_legal_coordinator_message_is_accepted(state: State, kind: type) -> None:
    agent = AgentSession()
    put_in_state(agent, state)
    assert agent.receive(SAMPLES[kind]) is SAMPLES[kind]  # type: ignore[arg-type]
    coordinator = CoordinatorSession(1 << 20)
    put_in_state(coordinator, state)
    assert coordinator.send(SAMPLES[kind]) is SAMPLES[kind]  # type: ignore[arg-type]


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", list(COORDINATOR_SENDS), ids=message_type)
def test_session_coordinator_type_from_agent_is_out_of_order(state: State, kind: type) -> None:
    # decode_from_agent already refuses these; the machine refuses them too.
    coordinator = CoordinatorSession(1 << 20)
    put_in_state(coordinator, state)
    with raises_out_of_order("agent"):
        coordinator.receive(SAMPLES[kind])  # type: ignore[arg-type]


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", list(AGENT_SENDS), ids=message_type)
def test_session_agent_type_from_coordinator_is_out_of_order(state: State, kind: type) -> None:
    agent = AgentSession()
    put_in_state(agent, state)
    with raises_out_of_order("coordinator"):
        agent.receive(SAMPLES[kind])  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# version negotiation


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ((1,), 1),
        ((1, 2, 3, 4), 3),
        ((3, 2, 1), 3),
        ((1, 2), 2),
        ((1, 1), 1),
        ((0, 1), 1),
        ((2,), 2),
    ],
)
def test_session_negotiate_picks_highest_common_version(
    offered: tuple[int, ...], chosen: int
) -> None:
    assert negotiate(offered) == chosen


@pytest.mark.parametrize("offered", [(), (0,), (4,), (4, 5), (-1,)])
def test_session_negotiate_without_common_version_blames_agent(offered: tuple[int, ...]) -> None:
    with pytest.raises(ProtocolError) as info:
        negotiate(offered)
    assert (info.value.code, info.value.peer) == ("version", "agent")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=10), max_size=16))
def test_session_negotiate_is_max_of_intersection(offered: list[int]) -> None:
    common = set(offered) & set(SUPPORTED_VERSIONS)
    if common:
        assert negotiate(tuple(offered)) == max(common)
    else:
        with pytest.raises(ProtocolError):
            negotiate(tuple(offered))


def test_session_coordinator_rejects_hello_without_common_version() -> None:
    coordinator = CoordinatorSession(1 << 20)
    with pytest.raises(ProtocolError) as info:
        coordinator.receive(hello(versions=(4, 5)))
    assert (info.value.code, info.value.peer) == ("version", "agent")
    assert coordinator.state is State.HANDSHAKE and coordinator.version is None


@pytest.mark.parametrize(("offered", "chosen"), [((1, 2, 3), 4), ((1,), 2)])
def test_session_agent_rejects_welcome_with_unsupported_version(
    offered: tuple[int, ...], chosen: int
) -> None:
    agent = AgentSession()
    agent.send(hello(versions=offered))
    with pytest.raises(ProtocolError) as info:
        agent.receive(welcome(version=chosen))
    assert (info.value.code, info.value.peer) == ("version", "coordinator")
    assert agent.state is State.HANDSHAKE and agent.welcome is None


# mesh options (version 3)

MESH = MeshOptions(target_faces=5_000, printable=True)
V2_JOB_FIELDS = {"job", "attempt", "prompt", "seed", "guidance", "steps", "model"}


def test_session_version_3_peer_receives_the_mesh_options() -> None:
    pair = ConnectionPair()
    pair.handshake()
    assert pair.coordinator.version == 3
    received = pair.coordinator_sends(Assign(jobs=(spec(mesh=MESH), spec("job-2"))))
    assert isinstance(received, Assign)
    assert [job.mesh for job in received.jobs] == [MESH, None]


@pytest.mark.parametrize("versions", [(1,), (1, 2)])
def test_session_older_peer_gets_assign_without_mesh_options(versions: tuple[int, ...]) -> None:
    pair = ConnectionPair()
    pair.handshake(hello(versions=versions))
    sent = pair.coordinator.send(Assign(jobs=(spec(mesh=MESH),)))
    wire = json.loads(encode(sent))
    # Exactly the fields an agent of that version knows (it forbids unknown ones).
    assert set(wire["jobs"][0]) <= V2_JOB_FIELDS
    assert pair.coordinator.is_held("job-1", 1)  # assigned all the same


def test_session_spec_without_mesh_options_is_unchanged_on_the_wire() -> None:
    wire = json.loads(encode(Assign(jobs=(spec(),))))
    assert set(wire["jobs"][0]) == V2_JOB_FIELDS - {"model"}  # defaults are left out


# --------------------------------------------------------------------------
# uploads


def test_session_upload_of_held_job_is_held() -> None:
    pair = busy_pair(("job-1", 1))
    preview = b"\x89PNG" + b"p" * 100
    result = result_for("job-1", 1, [("glb", GLB), ("preview", preview)], stream=42)
    pair.agent_sends(result)
    assert pair.coordinator.uploading == result
    upload = None
    for frame in iter_chunks(42, GLB + preview, 333):
        upload = pair.coordinator.receive_chunk(frame)
    assert upload is not None
    assert upload.held and upload.parts == [GLB, preview]
    assert pair.coordinator.uploading is None


@pytest.mark.parametrize(
    ("job", "attempt"), [("job-2", 1), ("job-1", 2)], ids=["other-job", "other-attempt"]
)
def test_session_upload_of_unassigned_attempt_is_stale(job: str, attempt: int) -> None:
    pair = busy_pair(("job-1", 1))
    upload = pair.upload(result_for(job, attempt, [("glb", GLB)]), GLB)
    # Not held at its header: the bytes were checked and dropped, never given a sink.
    assert upload is not None and not upload.held and upload.sink is None
    assert pair.coordinator.held == {("job-1", 1)}


def test_session_upload_after_cancel_is_stale() -> None:
    pair = busy_pair(("job-1", 1))
    pair.coordinator.send(Cancel(job="job-1", attempt=1))  # crosses the agent's result
    pair.agent.send(result := result_for("job-1", 1, [("glb", GLB)]))
    pair.coordinator.receive(result)
    upload = None
    for frame in iter_chunks(result.stream, GLB, 1024):
        upload = pair.coordinator.receive_chunk(frame)
    assert upload is not None and not upload.held


def test_session_upload_of_zero_bytes_completes_at_header() -> None:
    pair = busy_pair(("job-1", 1))
    result = result_for("job-1", 1, [("glb", b"")])
    assert result.artifacts[0].sha256 == SHA_EMPTY
    pair.agent_sends(result)
    upload = pair.coordinator.empty_upload()
    assert upload is not None and upload.held and upload.parts == [b""]
    assert pair.coordinator.uploading is None
    assert pair.coordinator.empty_upload() is None


def test_session_empty_upload_is_none_unless_a_zero_size_upload_waits() -> None:
    pair = busy_pair(("job-1", 1))
    assert pair.coordinator.empty_upload() is None
    pair.agent_sends(result_for("job-1", 1, [("glb", GLB)]))
    assert pair.coordinator.empty_upload() is None
    assert pair.coordinator.uploading is not None


def test_session_zero_size_upload_not_collected_blocks_next_result() -> None:
    pair = busy_pair(("job-1", 1), ("job-2", 1))
    pair.agent_sends(result_for("job-1", 1, [("glb", b"")]))
    with raises_out_of_order("agent"):
        pair.coordinator.receive(result_for("job-2", 1, [("glb", GLB)], stream=2))


def test_session_second_result_before_first_upload_finished() -> None:
    pair = busy_pair(("job-1", 1), ("job-2", 1))
    pair.agent_sends(result_for("job-1", 1, [("glb", GLB)]))
    first = next(iter_chunks(1, GLB, 100))
    assert pair.coordinator.receive_chunk(first) is None
    with raises_out_of_order("agent") as info:
        pair.coordinator.receive(result_for("job-2", 1, [("glb", GLB)], stream=2))
    assert "previous upload" in str(info.value)


def test_session_results_one_after_another_are_fine() -> None:
    pair = busy_pair(("job-1", 1), ("job-2", 1))
    first = pair.upload(result_for("job-1", 1, [("glb", GLB)], stream=1), GLB)
    second = pair.upload(result_for("job-2", 1, [("glb", b"x")], stream=2), b"x")
    assert first is not None and first.result.job == "job-1"
    assert second is not None and second.result.job == "job-2" and second.parts == [b"x"]


class _Sinks:
    """An ``open_sink`` that records which headers got a sink, and each sink's fate."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, int]] = []
        self.sinks: list[BufferSink] = []

    def __call__(self, result: Result) -> BufferSink:
        self.opened.append((result.job, result.attempt))
        self.sinks.append(BufferSink())
        return self.sinks[-1]


def _pair_with_sinks(*jobs: tuple[str, int]) -> tuple[ConnectionPair, _Sinks]:
    pair = busy_pair(*jobs)
    sinks = _Sinks()
    pair.coordinator.open_sink = sinks
    return pair, sinks


def test_session_upload_not_held_gets_no_sink() -> None:
    # A stale, foreign or invented (job, attempt) costs the coordinator no buffer at all.
    pair, sinks = _pair_with_sinks(("job-1", 1))
    upload = pair.upload(result_for("nope", 1, [("glb", GLB)]), GLB, chunk_bytes=100)
    assert upload is not None and upload.sink is None and not upload.held
    assert sinks.opened == []


def test_session_upload_held_streams_into_its_sink() -> None:
    pair, sinks = _pair_with_sinks(("job-1", 1))
    upload = pair.upload(result_for("job-1", 1, [("glb", GLB)]), GLB, chunk_bytes=100)
    assert upload is not None and upload.held and upload.sink is sinks.sinks[0]
    assert sinks.opened == [("job-1", 1)] and sinks.sinks[0].closed
    assert upload.parts == [GLB]


def test_session_close_during_upload_aborts_its_sink() -> None:
    pair, sinks = _pair_with_sinks(("job-1", 1))
    pair.agent_sends(result_for("job-1", 1, [("glb", GLB)]))
    pair.coordinator.receive_chunk(next(iter_chunks(1, GLB, 100)))
    pair.coordinator.close()
    assert sinks.sinks[0].aborted and not sinks.sinks[0].data


@pytest.mark.parametrize("frame", [b"short", pack_chunk(1, 5, b"x")], ids=["short", "gap"])
def test_session_bad_chunk_aborts_the_sink(frame: bytes) -> None:
    pair, sinks = _pair_with_sinks(("job-1", 1))
    pair.agent_sends(result_for("job-1", 1, [("glb", GLB)]))
    with pytest.raises(ProtocolError):
        pair.coordinator.receive_chunk(frame)
    assert sinks.sinks[0].aborted and pair.coordinator.uploading is None


def test_session_bad_checksum_aborts_the_sink() -> None:
    pair, sinks = _pair_with_sinks(("job-1", 1))
    header = result_for("job-1", 1, [("glb", GLB)])
    pair.agent_sends(header)
    with pytest.raises(ProtocolError) as info:
        for frame in iter_chunks(1, GLB[:-1] + b"!", 1000):
            pair.coordinator.receive_chunk(frame)
    assert info.value.code == "bad_checksum" and sinks.sinks[0].aborted


def test_session_refused_header_opens_no_sink() -> None:
    pair, sinks = _pair_with_sinks(("job-1", 1))
    pair.coordinator.max_result_bytes = 10
    with pytest.raises(ProtocolError) as info:
        pair.agent_sends(result_for("job-1", 1, [("glb", GLB)]))
    assert info.value.code == "too_big" and sinks.opened == []


@pytest.mark.parametrize("state", [State.HANDSHAKE, State.READY, State.CLOSED])
def test_session_chunk_without_result_header_is_out_of_order(state: State) -> None:
    coordinator = CoordinatorSession(1 << 20)
    put_in_state(coordinator, state)
    with raises_out_of_order("agent"):
        coordinator.receive_chunk(pack_chunk(1, 0, b"x"))


def test_session_result_over_max_result_bytes_is_too_big() -> None:
    pair = ConnectionPair(max_result_bytes=100)
    pair.handshake()
    pair.coordinator_sends(Assign(jobs=(spec(),)))
    with pytest.raises(ProtocolError) as info:
        pair.agent_sends(result_for("job-1", 1, [("glb", b"x" * 101)]))
    assert (info.value.code, info.value.peer) == ("too_big", "agent")
    assert pair.coordinator.uploading is None


def test_session_upload_with_wrong_checksum_is_rejected() -> None:
    pair = busy_pair(("job-1", 1))
    liar = Result(
        job="job-1",
        attempt=1,
        stream=1,
        artifacts=(Artifact(kind="glb", size=len(GLB), sha256="0" * 64),),
    )
    with pytest.raises(ProtocolError) as info:
        pair.upload(liar, GLB)
    assert (info.value.code, info.value.peer) == ("bad_checksum", "agent")


def test_session_upload_chunk_for_wrong_stream_is_rejected() -> None:
    pair = busy_pair(("job-1", 1))
    pair.agent_sends(result_for("job-1", 1, [("glb", GLB)], stream=5))
    with pytest.raises(ProtocolError) as info:
        pair.coordinator.receive_chunk(pack_chunk(6, 0, GLB))
    assert (info.value.code, info.value.peer) == ("bad_chunk", "agent")


def test_session_upload_bad_frame_is_rejected() -> None:
    pair = busy_pair(("job-1", 1))
    pair.agent_sends(result_for("job-1", 1, [("glb", GLB)]))
    with pytest.raises(ProtocolError) as info:
        pair.coordinator.receive_chunk(b'{"type": "heartbeat", "seq": 1}')
    assert (info.value.code, info.value.peer) == ("bad_chunk", "agent")


# --------------------------------------------------------------------------
# a random legal conversation keeps both machines in step


class ConversationMachine(RuleBasedStateMachine):
    """Drives a ConnectionPair with a simple coordinator policy.

    The coordinator settles a job as soon as its result or failure arrives, so
    after every step both ends must agree on the state and on the jobs held.
    """

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.pair = ConnectionPair()
        self.next_job = 0
        self.seq = 0
        self.stream = 0

    @initialize()
    def connect(self) -> None:
        self.pair.handshake()

    @precondition(lambda self: self.pair.coordinator.state in {State.READY, State.BUSY})
    @rule(target=jobs, size=st.integers(min_value=1, max_value=3))
    def assign(self, size: int) -> object:
        specs = []
        for _ in range(size):
            self.next_job += 1
            specs.append(spec(f"job-{self.next_job}", 1))
        self.pair.coordinator_sends(Assign(jobs=tuple(specs)))
        return multiple(*((s.job, s.attempt) for s in specs))

    @rule(key=jobs)
    def progress(self, key: tuple[str, int]) -> None:
        if key in self.pair.agent.held:
            job, attempt = key
            self.pair.agent_sends(Accepted(job=job, attempt=attempt))
            self.pair.agent_sends(
                Progress(job=job, attempt=attempt, stage="sampling", step=1, total=2)
            )

    @rule(key=consumes(jobs), data=st.binary(max_size=300), chunk=st.integers(1, 128))
    def succeed(self, key: tuple[str, int], data: bytes, chunk: int) -> None:
        job, attempt = key
        self.stream += 1
        held = key in self.pair.coordinator.held
        upload = self.pair.upload(
            result_for(job, attempt, [("glb", data)], self.stream), data, chunk
        )
        assert upload is not None and upload.held == held
        assert upload.parts == [data] if held else upload.sink is None
        ack = ResultAck(job=job, attempt=attempt, status="stored" if upload.held else "duplicate")
        self.pair.coordinator_sends(ack)
        self.pair.coordinator.release(job, attempt)

    @rule(key=consumes(jobs), retryable=st.booleans())
    def fail(self, key: tuple[str, int], retryable: bool) -> None:
        job, attempt = key
        self.pair.agent_sends(Failed(job=job, attempt=attempt, reason="x", retryable=retryable))
        self.pair.coordinator.release(job, attempt)

    @rule(key=consumes(jobs))
    def cancel(self, key: tuple[str, int]) -> None:
        job, attempt = key
        self.pair.coordinator_sends(Cancel(job=job, attempt=attempt))

    @rule()
    def heartbeat(self) -> None:
        self.seq += 1
        running = tuple(sorted(job for job, _ in self.pair.agent.held))
        self.pair.agent_sends(Heartbeat(seq=self.seq, running=running))

    @precondition(lambda self: self.pair.coordinator.state is not State.DRAINING)
    @rule()
    def drain(self) -> None:
        self.pair.coordinator_sends(Drain())

    @invariant()
    def both_ends_agree(self) -> None:
        assert self.pair.agent.state is self.pair.coordinator.state
        assert self.pair.agent.held == self.pair.coordinator.held
        if self.pair.agent.state is not State.DRAINING:
            expected = State.BUSY if self.pair.agent.held else State.READY
            assert self.pair.agent.state is expected


ConversationMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None
)
test_session_conversation_keeps_both_ends_in_step = ConversationMachine.TestCase


# ------------------------------------------------------------------ version 2: owner controls


def test_session_version_1_still_negotiates_with_an_old_agent() -> None:
    pair = ConnectionPair()
    pair.agent_sends(hello(versions=(1,)))
    assert pair.coordinator.version == 1
    pair.coordinator_sends(welcome(version=1))
    assert pair.agent.version == 1 and not pair.agent.speaks(2)


@pytest.mark.parametrize(
    "message",
    [
        SAMPLES[Status],
        Declined(job="job-1", attempt=1, reason="paused"),
    ],
)
def test_session_version_2_agent_messages_are_refused_on_a_version_1_connection(
    message: Any,
) -> None:
    pair = ConnectionPair()
    pair.handshake(hello(versions=(1,)), welcome(version=1))
    with pytest.raises(ProtocolError) as caught:
        pair.coordinator.receive(message)
    assert caught.value.code == "out_of_order" and caught.value.peer == "agent"
    assert "version 2" in str(caught.value)


@pytest.mark.parametrize("message", [Pause(cancel=True), Resume()])
def test_session_version_2_coordinator_messages_cannot_be_sent_on_version_1(message: Any) -> None:
    pair = ConnectionPair()
    pair.handshake(hello(versions=(1,)), welcome(version=1))
    with pytest.raises(ProtocolError) as caught:
        pair.coordinator.send(message)
    assert caught.value.peer == "coordinator"
    with pytest.raises(ProtocolError):
        pair.agent.receive(message)


def test_session_declined_releases_the_job_on_the_agent_side() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.coordinator_sends(Assign(jobs=(spec(),)))
    assert pair.states == ("busy", "busy")
    pair.agent_sends(Declined(job=spec().job, attempt=spec().attempt, reason="blocked"))
    assert pair.agent.state.value == "ready"
    pair.coordinator.release(spec().job, spec().attempt)
    assert pair.states == ("ready", "ready")


def test_session_version_2_controls_flow_both_ways() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.coordinator_sends(Pause(cancel=False, reason="from the page"))
    pair.agent_sends(Status(paused=True, reason="from the page", max_batch=2))
    pair.coordinator_sends(Resume())
    pair.agent_sends(Status())
    assert pair.states == ("ready", "ready")
