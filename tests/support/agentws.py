"""A scripted agent over Starlette's TestClient WebSocket, and frame strategies for fuzzing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from starlette.testclient import TestClient, WebSocketTestSession

from agent.instant import tetrahedron_glb
from coordinator.cli.admin_cli import issue_token
from coordinator.store import models
from protocol import (
    Artifact,
    Capabilities,
    CoordinatorMessage,
    Hello,
    Message,
    Result,
    ResultAck,
    Welcome,
    decode_from_coordinator,
    encode,
    iter_chunks,
)
from protocol.frames import pack_chunk
from protocol.limits import MAX_STEPS
from tests.support.coordinators import make_settings, provision
from tests.support.webclient import app_client

# Every error code docs/protocol.md section 9 lists for an agent's violation.
PROTOCOL_CODES = {"bad_json", "bad_message", "too_big", "out_of_order", "bad_chunk", "bad_checksum"}
PROBE_JOB = "probe"
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


@dataclass
class Closed:
    code: int
    reason: str


@dataclass
class Farm:
    client: TestClient
    api_key: str
    tokens: list[str]

    @property
    def state(self) -> Any:
        return self.client.app.state.farm  # type: ignore[attr-defined]

    def submit(self, **fields: object) -> str:
        response = self.client.post(
            "/api/v1/jobs",
            json={"prompt": "a fuzzed cube", "steps": 4, **fields},
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])

    @contextmanager
    def connect(self, token: str | None = None) -> Iterator[ScriptedAgent]:
        """An agent connection (welcomed if ``token``), fully torn down on exit.

        TestClient cancels the endpoint as soon as the block ends; waiting for the
        coordinator's own disconnect handling first keeps a DB write from being cut
        in half (which leaves aiosqlite hanging at shutdown, a test artefact).
        """
        with self.client.websocket_connect("/agent/ws") as ws:
            agent = ScriptedAgent(ws)
            if token is not None:
                agent.hello(token)
            # Any later write of the agent's last_seen_at comes from its disconnect.
            since = time.time()
            try:
                yield agent
            finally:
                ws.close(1000)
                ws.portal.call(self._settled, agent.agent_id, since)

    async def _settled(self, agent_id: str | None, since: float) -> None:
        state = self.state
        engine = state.sessions.kw["bind"]
        async with asyncio.timeout(10):
            while True:
                await asyncio.sleep(0.005)
                if engine.pool.checkedout():
                    continue
                if agent_id is None:
                    return
                async with state.sessions() as db:
                    row = await db.get(models.Agent, agent_id)
                    if agent_id not in state.agents and row.last_seen_at >= since:
                        return

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(
            f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


@contextmanager
def farm(tmp: Path, agents: int = 2, **overrides: Any) -> Iterator[Farm]:
    """An in-process coordinator with one user, an API key and ``agents`` agent tokens."""
    data = tmp / "data"
    settings = make_settings(data, **overrides)
    key, token_file = asyncio.run(provision(settings, tmp))
    tokens = [token_file.read_text().strip()]
    for i in range(1, agents):
        tokens.append(asyncio.run(issue_token(settings, "alice", f"agent {i}", True))[1])
    with app_client(data, **overrides) as client:
        yield Farm(client, key, tokens)


class ScriptedAgent:
    """Drives one agent connection by hand: every frame is chosen by the test."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.stream = 0
        self.seen: list[CoordinatorMessage] = []  # everything received, for assertions
        self.agent_id: str | None = None

    def hello(self, token: str, holding: tuple[tuple[str, int], ...] = ()) -> Welcome:
        caps = Capabilities(max_batch=1, max_steps=MAX_STEPS, formats=("glb", "preview"))
        self.send(Hello(token=token, versions=(1,), agent_version="fuzz", capabilities=caps,
                        holding=holding))  # fmt: skip
        welcome = self.receive()
        assert isinstance(welcome, Welcome), welcome
        self.agent_id = welcome.agent_id
        return welcome

    def send(self, message: Message) -> None:
        self.ws.send_text(encode(message))

    def receive(self) -> CoordinatorMessage | Closed:
        frame = self.ws.receive()
        if frame["type"] == "websocket.close":
            return Closed(int(frame.get("code", 1000)), str(frame.get("reason") or ""))
        message = decode_from_coordinator(frame["text"])
        self.seen.append(message)
        return message

    def receive_until(self, kind: type, **match: object) -> CoordinatorMessage | Closed:
        """Skip other messages until one of ``kind`` with the given fields, or a close."""
        while True:
            message = self.receive()
            if isinstance(message, Closed) or (
                isinstance(message, kind)
                and all(getattr(message, k) == v for k, v in match.items())
            ):
                return message

    def upload(
        self, job: str, attempt: int, data: bytes, sha256: str | None = None, chunk: int = 4096
    ) -> None:
        self.stream += 1
        artifact = Artifact(kind="glb", size=len(data),
                            sha256=sha256 or hashlib.sha256(data).hexdigest())  # fmt: skip
        self.send(Result(job=job, attempt=attempt, stream=self.stream, artifacts=(artifact,)))
        for frame in iter_chunks(self.stream, data, chunk):
            self.ws.send_bytes(frame)

    def probe(self) -> CoordinatorMessage | Closed:
        """A zero-byte upload the coordinator must answer at once: alive, or closed."""
        self.stream += 1
        artifact = Artifact(kind="preview", size=0, sha256=EMPTY_SHA)
        self.send(Result(job=PROBE_JOB, attempt=1, stream=self.stream, artifacts=(artifact,)))
        return self.receive_until(ResultAck, job=PROBE_JOB)


def valid_glb(seed: int = 1) -> bytes:
    return tetrahedron_glb(seed)


# ----------------------------------------------------------------------------- strategies

job_ids = st.one_of(st.sampled_from(["j1", "x", "A_b-9"]), st.text(max_size=70))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=30),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
AGENT_TYPES = ["hello", "heartbeat", "accepted", "progress", "result", "failed"]
OTHER_TYPES = ["welcome", "assign", "cancel", "result_ack", "drain", "error", "nope", ""]


@st.composite
def plausible_messages(draw: st.DrawFn) -> dict[str, object]:
    """Message-shaped objects: right or wrong type names, right or wrong fields."""
    kind = draw(st.sampled_from(AGENT_TYPES + OTHER_TYPES))
    fields: dict[str, object] = {"type": kind}
    base = {
        "job": draw(job_ids),
        "attempt": draw(st.one_of(st.integers(-2, 1002), json_values)),
        "seq": draw(st.integers(-1, 2**32)),
        "stage": draw(st.sampled_from(["sampling", "uploading", "dancing"])),
        "step": draw(st.integers(-1, 10)),
        "total": draw(st.integers(-1, 10)),
        "reason": draw(st.text(max_size=50)),
        "retryable": draw(st.one_of(st.booleans(), json_values)),
        "stream": draw(st.integers(0, 2**33)),
        "artifacts": [
            {"kind": draw(st.sampled_from(["glb", "preview", "exe"])),
             "size": draw(st.integers(-1, 5000)),
             "sha256": draw(st.sampled_from([EMPTY_SHA, "0" * 64, "xyz"]))},
        ],
    }  # fmt: skip
    for name, value in base.items():
        if draw(st.booleans()):
            fields[name] = value
    if draw(st.booleans()):
        fields[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return fields


def _text_frame(value: object) -> tuple[str, str | bytes]:
    return ("text", json.dumps(value))


text_frames = st.one_of(
    st.text(max_size=200).map(lambda s: ("text", s)),
    json_values.map(_text_frame),
    plausible_messages().map(_text_frame),
    st.integers(0, 4).map(lambda depth: ("text", "[" * (10_000 * depth) + "]" * (10_000 * depth))),
)
binary_frames = st.one_of(
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    st.builds(
        lambda stream, offset, payload: ("bytes", pack_chunk(stream, offset, payload)),
        st.integers(0, 5), st.integers(0, 100), st.binary(max_size=32),
    ),
)  # fmt: skip
frame_sequences = st.lists(st.one_of(text_frames, binary_frames), min_size=1, max_size=8)
