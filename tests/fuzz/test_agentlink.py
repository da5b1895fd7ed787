"""Fuzzing the agent WebSocket endpoint in process (Starlette TestClient).

Whatever an agent sends, the coordinator answers with a clear ``error`` and
close code 4400 (docs/protocol.md section 9) or carries on; it never crashes,
and no other agent's job changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from coordinator.meshes.glb import normalise_glb
from coordinator.meshes.glbcheck import GlbLimits
from protocol import Artifact, Assign, CloseCode, Error, Heartbeat, Result, ResultAck
from protocol.frames import pack_chunk
from tests.support.agentws import (
    PROBE_JOB,
    PROTOCOL_CODES,
    Closed,
    Farm,
    ScriptedAgent,
    farm,
    frame_sequences,
    valid_glb,
)

# Leases far longer than the test, so nothing but the fuzz itself could move a job.
LONG_LEASE = {"lease_s": 600.0, "max_result_bytes": 64 * 1024}


def _assigned(agent: ScriptedAgent) -> Assign:
    message = agent.receive_until(Assign)
    assert isinstance(message, Assign), message
    return message


def _assert_protocol_close(agent: ScriptedAgent, outcome: object, code: str | None = None) -> None:
    assert isinstance(outcome, Closed), outcome
    assert outcome.code == CloseCode.PROTOCOL_ERROR, outcome
    errors = [m for m in agent.seen if isinstance(m, Error)]
    assert errors, "closed without an error message"
    assert errors[-1].fatal and errors[-1].message, errors[-1]
    assert errors[-1].code in PROTOCOL_CODES, errors[-1]
    if code is not None:
        assert errors[-1].code == code, errors[-1]


def _finish(f: Farm, agent: ScriptedAgent, job: str, attempt: int) -> None:
    agent.upload(job, attempt, valid_glb())
    ack = agent.receive_until(ResultAck, job=job)
    assert isinstance(ack, ResultAck) and ack.status == "stored", ack
    assert f.job(job)["state"] == "succeeded"


def test_agentlink_fuzzed_frames_get_clear_errors_and_leave_other_jobs_alone(
    tmp_path: Path,
) -> None:
    with farm(tmp_path, **LONG_LEASE) as f:
        bystander_job = f.submit()
        with f.connect(f.tokens[1]) as bystander:
            spec = _assigned(bystander).jobs[0]
            assert spec.job == bystander_job

            @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
            @given(frames=frame_sequences)
            def one_connection(frames: list[tuple[str, str | bytes]]) -> None:
                with f.connect(f.tokens[0]) as agent:
                    ws = agent.ws
                    for kind, data in frames:
                        if kind == "text":
                            ws.send_text(str(data))
                        else:
                            ws.send_bytes(bytes(data))  # type: ignore[arg-type]
                    outcome = agent.probe()
                    if isinstance(outcome, ResultAck):
                        assert outcome.status == "rejected" and outcome.reason, outcome
                    else:
                        _assert_protocol_close(agent, outcome)

            one_connection()
            # The bystander's job was never requeued, failed or shown as uploading.
            job = f.job(bystander_job)
            assert (job["state"], job["attempt"]) in {("assigned", 1), ("running", 1)}, job
            live = f.state.progress.get(bystander_job)
            assert live is None or live.stage != "uploading"
            _finish(f, bystander, bystander_job, spec.attempt)
        assert f.client.get("/healthz").json()["ok"] is True


def _bad_upload_header(stream: int) -> Result:
    return Result(job="j1", attempt=1, stream=stream,
                  artifacts=(Artifact(kind="glb", size=10, sha256="0" * 64),))  # fmt: skip


CASES = {
    "malformed JSON": ([("text", '{"type": ')], "bad_json"),
    "not UTF-8": ([("bytes_as_text", b"\xff\xfe")], "bad_json"),
    "wrong field type": ([("text", '{"type": "heartbeat", "seq": "one"}')], "bad_message"),
    "unknown type": ([("text", '{"type": "teleport"}')], "bad_message"),
    "unknown field": ([("text", '{"type": "heartbeat", "seq": 1, "x": 0}')], "bad_message"),
    "coordinator-only type": ([("text", '{"type": "drain"}')], "bad_message"),
    "oversized control message": (
        [("text", '{"type": "heartbeat", "seq": 1, "pad": "' + "x" * 300_000 + '"}')],
        "too_big",
    ),
    "hello twice": ([("hello", b"")], "out_of_order"),
    "binary frame without a result header": ([("bytes", pack_chunk(1, 0, b"abc"))], "out_of_order"),
    "chunk with bad magic": ([("header", b""), ("bytes", b"XXX" + bytes(20))], "bad_chunk"),
    "chunk for another stream": ([("header", b""), ("bytes", pack_chunk(9, 0, b"a"))], "bad_chunk"),
    "chunk with a gap": ([("header", b""), ("bytes", pack_chunk(1, 5, b"a"))], "bad_chunk"),
    "chunk past the announced size": (
        [("header", b""), ("bytes", pack_chunk(1, 0, bytes(11)))],
        "bad_chunk",
    ),
    "second header during an upload": ([("header", b""), ("header", b"")], "out_of_order"),
    "wrong sha256": ([("header", b""), ("bytes", pack_chunk(1, 0, bytes(10)))], "bad_checksum"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_agentlink_bad_frames_get_the_documented_error_and_close_code(
    tmp_path: Path, case: str
) -> None:
    frames, code = CASES[case]
    with farm(tmp_path, agents=1, **LONG_LEASE) as f:
        with f.connect(f.tokens[0]) as agent:
            ws = agent.ws
            for kind, data in frames:
                if kind == "text":
                    ws.send_text(str(data))
                elif kind == "bytes_as_text":
                    ws.send({"type": "websocket.receive", "text": data.decode("latin-1")})
                elif kind == "hello":
                    agent.send(Heartbeat(seq=1))
                    ws.send_text('{"type":"hello","token":"x","versions":[1],'
                                 '"agent_version":"v","capabilities":{}}')  # fmt: skip
                elif kind == "header":
                    agent.send(_bad_upload_header(1))
                else:
                    ws.send_bytes(bytes(data))
            _assert_protocol_close(agent, agent.receive_until(ResultAck, job=PROBE_JOB), code)
        # The coordinator is still up: a well-behaved agent completes a job.
        job = f.submit()
        with f.connect(f.tokens[0]) as agent:
            spec = _assigned(agent).jobs[0]
            _finish(f, agent, job, spec.attempt)


def test_agentlink_refuses_upload_over_max_result_bytes_before_any_chunk(tmp_path: Path) -> None:
    with farm(tmp_path, agents=1, **LONG_LEASE) as f, f.connect(f.tokens[0]) as agent:
        size = LONG_LEASE["max_result_bytes"] + 1
        agent.send(Result(job="j1", attempt=1, stream=1,
                          artifacts=(Artifact(kind="glb", size=int(size),
                                              sha256="0" * 64),)))  # fmt: skip
        _assert_protocol_close(agent, agent.receive_until(ResultAck), "too_big")


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"bytes": b"\x00\x01"}, "bad_message"),
        ({"text": '{"type": "heartbeat", "seq": 1}'}, "out_of_order"),
        ({"text": "not json"}, "bad_json"),
    ],
)
def test_agentlink_first_frame_must_be_hello(
    tmp_path: Path, first: dict[str, object], code: str
) -> None:
    with farm(tmp_path, agents=1) as f, f.connect() as agent:
        agent.ws.send({"type": "websocket.receive", **first})
        _assert_protocol_close(agent, agent.receive_until(ResultAck), code)


def test_agentlink_bad_token_closes_4401(tmp_path: Path) -> None:
    with farm(tmp_path, agents=1) as f, f.connect() as agent:
        forged = f.tokens[0][:-4] + "AAAA"
        hello = {"type": "hello", "token": forged, "versions": [1], "agent_version": "v",
                 "capabilities": {}}  # fmt: skip
        agent.ws.send_text(json.dumps(hello))
        outcome = agent.receive_until(ResultAck)
        assert isinstance(outcome, Closed) and outcome.code == CloseCode.BAD_TOKEN, outcome
        assert [m.code for m in agent.seen if isinstance(m, Error)] == ["bad_token"]


def test_agentlink_result_for_a_job_the_agent_does_not_hold_is_rejected(tmp_path: Path) -> None:
    with farm(tmp_path, **LONG_LEASE) as f:
        job = f.submit()
        with f.connect(f.tokens[1]) as holder:
            spec = _assigned(holder).jobs[0]
            with f.connect(f.tokens[0]) as thief:
                thief.upload(job, spec.attempt, valid_glb(9))
                ack = thief.receive_until(ResultAck, job=job)
                assert isinstance(ack, ResultAck) and ack.status == "rejected", ack
                assert "no longer current" in ack.reason
                assert isinstance(thief.probe(), ResultAck)  # still connected
            # The holder's job shows none of the thief's upload.
            assert f.state.progress[job].stage != "uploading"
            assert f.job(job)["state"] in {"assigned", "running"}
            _finish(f, holder, job, spec.attempt)
        # What is stored is the holder's model, normalised; never the thief's.
        stored = f.state.store.read(job, "glb")
        holders, _ = normalise_glb(valid_glb(), GlbLimits())
        thiefs, _ = normalise_glb(valid_glb(9), GlbLimits())
        assert holders != thiefs
        assert hashlib.sha256(stored).digest() == hashlib.sha256(holders).digest()


def test_agentlink_valid_sha_but_invalid_glb_is_rejected_and_requeued(tmp_path: Path) -> None:
    with farm(tmp_path, agents=1, **LONG_LEASE) as f:
        job = f.submit()
        with f.connect(f.tokens[0]) as agent:
            spec = _assigned(agent).jobs[0]
            agent.upload(job, spec.attempt, b"glTF" + bytes(60))
            ack = agent.receive_until(ResultAck, job=job)
            assert isinstance(ack, ResultAck) and ack.status == "rejected", ack
            assert ack.reason.startswith("invalid GLB:"), ack
            # The attempt is given up and the job comes back with the next attempt.
            again = _assigned(agent).jobs[0]
            assert (again.job, again.attempt) == (job, spec.attempt + 1)
            assert "retrying" in (f.job(job)["error"] or "")
            _finish(f, agent, job, again.attempt)
        assert not f.state.store.exists("probe", "glb")
