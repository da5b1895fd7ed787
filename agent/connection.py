"""The agent's outbound WebSocket connection: handshake, heartbeats, dispatch, reconnect.

:class:`AgentClient` dials the coordinator, drives a :class:`protocol.AgentSession`
and hands assignments to the :class:`agent.runner.Runner`, which outlives each
connection. A dropped connection is retried with exponential backoff and full
jitter; a refused token (``CloseCode.BAD_TOKEN`` or ``POLICY_VIOLATION``, HTTP 401)
stops the agent with :class:`AuthenticationError`, since retrying would not heal it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent import __version__
from agent.compression import client_extensions
from agent.controls import Controls
from agent.runner import Runner
from agent.settings import AgentSettings
from agent.wslink import WebSocketLink
from protocol import (
    SUPPORTED_VERSIONS,
    AgentSession,
    Assign,
    Capabilities,
    CloseCode,
    Error,
    Heartbeat,
    Hello,
    Pause,
    ProtocolError,
    Resume,
    Welcome,
    decode_from_coordinator,
    encode,
)

logger = logging.getLogger(__name__)

MAX_INBOUND_BYTES = 1024 * 1024  # coordinator → agent is control messages only


class AuthenticationError(Exception):
    """The coordinator refused this agent's token; retrying will not help."""


class _Outcome(enum.Enum):
    RETRY = "retry"
    NOT_APPROVED = "not approved"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential with full jitter, reset after a long-lived connection."""

    base_s: float = 0.5
    cap_s: float = 30.0
    reset_after_s: float = 60.0
    not_approved_s: float = 30.0

    def delay(self, failures: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** min(failures, 32)))


class AgentClient:
    def __init__(
        self,
        settings: AgentSettings,
        runner: Runner,
        capabilities: Capabilities,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        handshake_timeout_s: float = 30.0,
        grace_s: float = 60.0,
        controls: Controls | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.capabilities = capabilities
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()  # jitter, not security
        self.clock = clock
        self.handshake_timeout_s = handshake_timeout_s
        self.grace_s = grace_s
        self.controls = controls
        self.connections = 0  # welcomed connections so far; for logs and tests
        self._stop = asyncio.Event()
        self._cancel_on_stop = settings.on_stop == "cancel"

    def stop(self, *, cancel: bool | None = None) -> None:
        """Shut down gracefully; a second call (e.g. a second Ctrl-C) cancels the running batch."""
        if self._stop.is_set():
            cancel = True
        if cancel is not None:
            self._cancel_on_stop = cancel or self._cancel_on_stop
        self._stop.set()
        self.runner.request_stop(cancel=self._cancel_on_stop)

    async def run(self) -> None:
        """Connect and reconnect until :meth:`stop`; raises :class:`AuthenticationError`."""
        worker = asyncio.create_task(self.runner.run(), name="runner")
        watch = (
            asyncio.create_task(self.controls.run(), name="controls")
            if self.controls is not None
            else None
        )
        failures = 0
        try:
            while not self._stop.is_set():
                started = self.clock()
                try:
                    outcome = await self._connect_once()
                except AuthenticationError:
                    raise
                except Exception:
                    # A bug must not take a volunteer's agent down for good: log, back off, retry.
                    logger.exception("connection failed unexpectedly")
                    outcome = _Outcome.RETRY
                if outcome is _Outcome.STOPPED or self._stop.is_set():
                    break
                if self.clock() - started > self.backoff.reset_after_s:
                    failures = 0
                if outcome is _Outcome.NOT_APPROVED:
                    delay = self.backoff.not_approved_s
                else:
                    delay = self.backoff.delay(failures, self.rng)
                    failures += 1
                logger.info("reconnecting in %.2f s", delay)
                if self.runner.status is not None:
                    self.runner.status.connection("reconnecting")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
        finally:
            if not self._stop.is_set():  # an auth failure or a crash, not a signal
                self.runner.request_stop(cancel=True)
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await worker

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.settings.url.startswith("wss://"):
            return None
        ca = self.settings.ca_file
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    async def _connect_once(self) -> _Outcome:
        try:
            async with connect(
                self.settings.url,
                ssl=self._ssl_context(),
                max_size=MAX_INBOUND_BYTES,
                # Deflate for control messages only: result bytes barely compress.
                compression=None,
                extensions=client_extensions(),
                open_timeout=self.handshake_timeout_s,
                user_agent_header=f"shapefarm-agent/{__version__}",
            ) as ws:
                try:
                    return await self._serve(ws)
                except ConnectionClosed as exc:
                    return self._closed(exc)
                finally:
                    self.runner.detach()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise AuthenticationError(
                    f"the coordinator refused the token (HTTP {status})"
                ) from exc
            logger.warning("coordinator answered HTTP %d to the upgrade", status)
            return _Outcome.NOT_APPROVED if status == 403 else _Outcome.RETRY
        except ConnectionClosed as exc:
            return self._closed(exc)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.warning("cannot reach the coordinator at %s: %s", self.settings.url, exc)
            return _Outcome.RETRY

    def _closed(self, exc: ConnectionClosed) -> _Outcome:
        return self._classify(
            exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
        )

    def _classify(self, code: int | None, reason: str | None) -> _Outcome:
        if code in (CloseCode.BAD_TOKEN, CloseCode.POLICY_VIOLATION):
            raise AuthenticationError(
                f"the coordinator refused this agent (close {code}: {reason or 'bad token'}); "
                "check the token or ask an admin for a new one"
            )
        if code == CloseCode.NOT_ALLOWED:
            if reason and reason.startswith("owner_suspended"):
                # The owner's account is suspended: keep retrying slowly, an unban lets us in.
                logger.warning("the coordinator suspended this agent's owner (%s)", reason)
            else:
                logger.warning("agent not approved yet (%s); an admin must approve it", reason)
            return _Outcome.NOT_APPROVED
        if self._stop.is_set():
            return _Outcome.STOPPED
        logger.warning("connection closed (%s %s)", code, reason)
        return _Outcome.RETRY

    async def _serve(self, ws: ClientConnection) -> _Outcome:
        session = AgentSession()
        hello = Hello(
            token=self.settings.token.get_secret_value(),
            versions=SUPPORTED_VERSIONS,
            agent_version=__version__,
            capabilities=self.capabilities,
            holding=self.runner.holding()[:256],
        )
        await ws.send(encode(session.send(hello)))
        async with asyncio.timeout(self.handshake_timeout_s):
            welcome = await self._await_welcome(ws, session)
        if welcome is None:
            await ws.close(CloseCode.PROTOCOL_ERROR, "bad welcome")
            return _Outcome.RETRY
        self.connections += 1
        logger.info("connected as agent %s (protocol %d)", welcome.agent_id, welcome.version)
        if self.runner.status is not None:
            self.runner.status.connection(f"agent {welcome.agent_id} connected")
        if not welcome.approved:
            logger.warning("connected, but an admin has not approved this agent yet")
        link = WebSocketLink(ws, session, welcome.limits)
        self.runner.attach(link)
        if self.controls is not None and not self.controls.apply():
            self.controls.announce()  # the coordinator learns the owner's controls first
        heartbeat_s = self.settings.heartbeat_s or welcome.heartbeat_s
        tasks = [
            asyncio.create_task(self._receive(ws, session), name="receive"),
            asyncio.create_task(self._heartbeat(ws, session, heartbeat_s), name="heartbeat"),
            asyncio.create_task(self.runner.pump(link), name="pump"),
            asyncio.create_task(self._shutdown_when_stopped(ws), name="shutdown"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Prefer a task that ended with an outcome over one that saw the socket die.
        for task in sorted(done, key=lambda t: t.exception() is not None):
            error = task.exception()
            if error is not None:
                raise error
            result = task.result()
            if isinstance(result, _Outcome):
                return result
        return _Outcome.RETRY

    async def _await_welcome(self, ws: ClientConnection, session: AgentSession) -> Welcome | None:
        while True:
            message = self._decode(await ws.recv())
            if isinstance(message, Error):
                logger.error(
                    "coordinator error during handshake: %s: %s", message.code, message.message
                )
            elif message is not None:
                try:
                    session.receive(message)
                except ProtocolError as exc:
                    logger.error("%s", exc)
                    return None
                if isinstance(message, Welcome):
                    return message

    def _decode(self, data: str | bytes) -> Any:
        if isinstance(data, bytes):
            logger.warning("ignoring an unexpected binary frame from the coordinator")
            return None
        try:
            return decode_from_coordinator(data)
        except ProtocolError as exc:
            logger.warning("ignoring a malformed coordinator message: %s", exc)
            return None

    async def _receive(self, ws: ClientConnection, session: AgentSession) -> _Outcome:
        async for data in ws:
            if isinstance(data, bytes):  # (v3) an image job's input image
                if session.awaiting_image is None:
                    self._decode(data)  # logs and ignores it, as any stray frame
                    continue
                try:
                    done = session.receive_image(data)
                except ProtocolError as exc:
                    logger.error("%s; reconnecting", exc)
                    await ws.close(CloseCode.PROTOCOL_ERROR, exc.code)
                    return _Outcome.RETRY
                if done is not None:
                    await self.runner.handle_image_assign(*done)
                continue
            message = self._decode(data)
            if message is None:
                continue
            try:
                session.receive(message)
            except ProtocolError as exc:
                logger.error("%s; reconnecting", exc)
                await ws.close(CloseCode.PROTOCOL_ERROR, exc.code)
                return _Outcome.RETRY
            if isinstance(message, Assign) and session.awaiting_image is not None:
                continue  # its jobs run once their image has arrived and been verified
            if isinstance(message, Error):
                log = logger.error if message.fatal else logger.warning
                log("coordinator error %s: %s", message.code, message.message)
            elif isinstance(message, Pause | Resume):
                if self.controls is not None:
                    self.controls.handle(message)
            else:
                await self.runner.handle(message)
        return self._classify(ws.close_code, ws.close_reason)  # a normal close (1000/1001)

    async def _heartbeat(self, ws: ClientConnection, session: AgentSession, every_s: float) -> None:
        seq = 0
        while True:
            await asyncio.sleep(every_s)  # a cadence, not a synchronisation
            seq += 1
            running = self.runner.running_jobs()[:64]
            await ws.send(encode(session.send(Heartbeat(seq=seq, running=running))))

    async def _shutdown_when_stopped(self, ws: ClientConnection) -> _Outcome:
        await self._stop.wait()
        logger.info("stopping: finishing work and sending results (up to %.0f s)", self.grace_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace_s):
                await self.runner.wait_stopped()
                await self.runner.wait_settled()
        await ws.close(CloseCode.GOING_AWAY, "agent shutting down")
        return _Outcome.STOPPED
