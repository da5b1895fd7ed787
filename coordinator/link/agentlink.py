"""The agent WebSocket endpoint: authenticate, then feed frames to the session machine.

Close codes (``protocol.CloseCode``): BAD_TOKEN unknown, bad or revoked token,
NOT_ALLOWED the owner's account is suspended (the agent retries slowly and is let
in again after an unban), PROTOCOL_ERROR, REPLACED by a newer connection of the
same agent, GOING_AWAY shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from coordinator.farm.engine import Farm
from coordinator.farm.live import AgentConn
from coordinator.link import results
from coordinator.services import agentcontrols, tokens
from coordinator.store import models
from coordinator.store.uploads import StoredUpload, open_upload
from protocol import (
    PROTOCOL_VERSION,
    Accepted,
    CloseCode,
    CoordinatorSession,
    Declined,
    Drain,
    Error,
    Failed,
    Heartbeat,
    Hello,
    Limits,
    Progress,
    ProtocolError,
    Result,
    Status,
    Upload,
    Welcome,
    decode_from_agent,
    encode,
)

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
# Results of one connection being checked and stored at once, at most; past that the
# connection is not read until one is done (an agent cannot pile up intake work).
MAX_INTAKE = 4
SUSPENDED = "owner_suspended"
SUSPENDED_MESSAGE = "owner_suspended: the account that owns this agent is suspended"


class _OwnerSuspendedError(Exception):
    """The owner was banned while this agent was connecting."""


async def _refuse(ws: WebSocket, code: CloseCode, error: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(encode(Error(code=error, message=message, fatal=True)))
        await ws.close(code, message[:120])


async def authenticate(farm: Farm, ws: WebSocket, hello: Hello) -> models.Agent | None:
    parsed = tokens.parse(hello.token, tokens.AGENT_PREFIX)
    async with farm.sessions() as db:
        agent = await db.get(models.Agent, parsed.id) if parsed else None
        if agent is None or parsed is None or not tokens.matches(agent.token_hash, parsed.secret):
            await _refuse(ws, CloseCode.BAD_TOKEN, "bad_token", "unknown or invalid agent token")
            return None
        if agent.revoked:
            await _refuse(
                ws, CloseCode.BAD_TOKEN, "revoked", "this agent's token was revoked; enroll again"
            )
            return None
        owner = await db.get(models.User, agent.owner_id)
        if owner is None or owner.banned or farm.is_suspended(agent.owner_id):
            await _refuse(ws, CloseCode.NOT_ALLOWED, SUSPENDED, SUSPENDED_MESSAGE)
            return None
        caps = hello.capabilities
        agent.gpu_name, agent.vram_mb = caps.gpu_name or caps.device, caps.vram_mb
        agent.version, agent.last_seen_at = hello.agent_version, farm.clock()
        await db.commit()
        return agent


async def serve_agent(farm: Farm, ws: WebSocket) -> None:
    await ws.accept()
    # Upload bytes go to memory (small ones, within a budget) or a temp file, and only
    # for an assignment this connection holds.
    session = CoordinatorSession(
        farm.settings.max_result_bytes,
        lambda result: open_upload(farm.store, farm.upload_memory, result),
    )
    conn: AgentConn | None = None
    intake: _Intake | None = None
    try:
        first = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT_S)
        text = first.get("text")
        if text is None:
            raise ProtocolError("the first frame must be a hello text frame", peer="agent")
        hello = session.receive(decode_from_agent(text))
        if not isinstance(hello, Hello):
            raise ProtocolError("the first message must be hello", peer="agent")
        agent = await authenticate(farm, ws, hello)
        if agent is None:
            return
        conn = AgentConn(
            id=agent.id,
            owner_id=agent.owner_id,
            name=agent.name,
            session=session,
            send_text=ws.send_text,
            send_bytes=ws.send_bytes,
            close=ws.close,
            capabilities=hello.capabilities,
            approved=agent.approved,
            version=hello.agent_version,
        )
        await _attach(farm, conn, hello)
        intake = _Intake(farm, conn)
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            if frame.get("text") is not None:
                await handle_message(farm, conn, session.receive(decode_from_agent(frame["text"])))
                if (empty := session.empty_upload()) is not None:
                    await intake.take(empty)
            elif frame.get("bytes") is not None:
                upload = session.receive_chunk(frame["bytes"])
                if upload is not None:
                    await intake.take(upload)
    except ProtocolError as exc:
        log.warning("agent %s: %s", conn.id if conn else "?", exc)
        await _refuse(ws, CloseCode.PROTOCOL_ERROR, exc.code, str(exc))
    except TimeoutError:
        await _refuse(
            ws, CloseCode.PROTOCOL_ERROR, "timeout", f"no hello within {HELLO_TIMEOUT_S:g} s"
        )
    except _OwnerSuspendedError:
        await _refuse(ws, CloseCode.NOT_ALLOWED, SUSPENDED, SUSPENDED_MESSAGE)
    except WebSocketDisconnect:
        pass
    finally:
        if intake is not None:
            await intake.finish()  # results already in are stored, acknowledged or not
        session.close()
        if conn is not None:
            await _detach(farm, conn)


class _Intake:
    """A connection's complete uploads, each checked and stored in a task of its own:
    meanwhile the connection goes on being read (the agent's next job, given to it as
    soon as this upload was in, sends its messages and result)."""

    def __init__(self, farm: Farm, conn: AgentConn) -> None:
        self.farm, self.conn = farm, conn
        self._tasks: set[asyncio.Task[None]] = set()

    async def take(self, upload: Upload) -> None:
        while len(self._tasks) >= MAX_INTAKE:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        # Released before the next frame is read: the assignment is over on this
        # connection whatever the check says, and the agent is free: its next job may go
        # out while this result is checked and stored (replica mode: the leader plans
        # with the database's view).
        self.conn.session.release(upload.result.job, upload.result.attempt)
        self.farm.nudge()
        task = asyncio.create_task(self._store(upload), name=f"result {upload.result.job}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self) -> None:
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _store(self, upload: Upload) -> None:
        try:
            await handle_upload(self.farm, self.conn, upload)
        except Exception:
            # As when it ran in the receive loop: the connection ends, and the agent
            # sends the result again from its spool when it reconnects.
            log.exception("agent %s: result %s could not be taken in", self.conn.id,
                          upload.result.job)  # fmt: skip
            with contextlib.suppress(Exception):
                await self.conn.close(CloseCode.GOING_AWAY, "a result could not be taken in")


async def _attach(farm: Farm, conn: AgentConn, hello: Hello) -> None:
    if farm.is_suspended(conn.owner_id):
        # Banned between the token check and now.
        raise _OwnerSuspendedError
    # The newer connection wins: the old one is usually a half-dead socket
    # behind a NAT that has not noticed yet.
    old = farm.replace_agent(conn)
    if old is not None:
        with contextlib.suppress(Exception):
            await old.close(CloseCode.REPLACED, "replaced by a newer connection of this agent")
    if conn.approved:
        await farm.take_over(conn, hello.holding)
    s = farm.settings
    await conn.send(
        Welcome(
            agent_id=conn.id,
            version=conn.session.version or PROTOCOL_VERSION,
            heartbeat_s=s.heartbeat_s,
            lease_s=s.lease_s,
            approved=conn.approved,
            limits=Limits(
                max_frame_bytes=s.max_frame_bytes,
                max_result_bytes=s.max_result_bytes,
                chunk_bytes=s.chunk_bytes,
            ),
        )
    )
    if farm.is_drained(conn.id):  # an admin drained it; a reconnect does not undo that
        await conn.send(Drain(reason="drained by an administrator"))
    if farm.is_suspended(conn.owner_id):  # banned while the welcome was sent
        raise _OwnerSuspendedError
    farm.register(conn)
    caps = conn.capabilities
    log.info("agent %s (%s) connected: %s", conn.id, conn.name, caps.gpu_name or caps.device)


async def _detach(farm: Farm, conn: AgentConn) -> None:
    # Give the agent a short grace to reconnect with its work before requeueing.
    farm.unregister(conn)
    async with farm.sessions() as db:
        agent = await db.get(models.Agent, conn.id)
        if agent is not None:
            agent.last_seen_at = farm.clock()
            await db.commit()
    log.info("agent %s disconnected", conn.id)


async def handle_message(farm: Farm, conn: AgentConn, message: object) -> None:
    if isinstance(message, Heartbeat):
        farm.renew(conn)
    elif isinstance(message, Accepted | Progress):
        if not conn.session.is_held(message.job, message.attempt):
            return  # late news about a job we already took back: harmless
        farm.renew(conn, [message.job])
        # Only an attempt's first word moves the job to running in the database; later
        # progress lives in memory (a DB round trip per progress message capped fan-out).
        if isinstance(message, Progress):
            first = farm.note_progress(
                message.job, message.stage, message.step, message.total, message.eta_s
            )
        else:
            first = farm.note_progress(message.job, "accepted")
        if first:
            await results.mark_running(farm, message.job, message.attempt)
        # Only the first word changes the row; later ones are live progress only, and
        # pages showing the job re-render them without reading the database again.
        farm.publish(message.job, "changed" if first else "progress")
    elif isinstance(message, Failed):
        if conn.session.is_held(message.job, message.attempt):
            conn.session.release(message.job, message.attempt)
            await results.record_failure(farm, conn, message)
    elif isinstance(message, Status | Declined):
        await agentcontrols.handle(farm, conn, message)
    elif isinstance(message, Result):
        if not conn.session.is_held(message.job, message.attempt):
            return  # a stale or foreign upload must not show on the holder's job
        farm.renew(conn, [message.job])
        farm.note_uploading(message.job)


async def handle_upload(farm: Farm, conn: AgentConn, upload: Upload) -> None:
    try:
        ack = await results.accept(farm, conn, upload)
    finally:
        if isinstance(upload.sink, StoredUpload):
            upload.sink.remove()  # stored (copied into the blob store) or refused
    with contextlib.suppress(Exception):
        await conn.send(ack)
    farm.hub.publish("farm")
    # No wake-up here: the intake woke the dispatcher when the upload came in, and a
    # stored result (Farm.settle) or a lost one (Farm.lose) wakes it again itself.
    if ack.status != "stored" and upload.held:
        await farm.lose(upload.result.job, upload.result.attempt, ack.reason)
