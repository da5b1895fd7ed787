"""A message bus between coordinator replicas: small typed notes, never state.

A note says *that* something changed (a job, the queue, a user) or asks the
replica that holds an agent's socket to tell it something; it carries ids, never
HTML or rows, and the receiver reads the current state from the database. So a
lost note is repaired by reading again: PostgreSQL's ``LISTEN/NOTIFY`` drops
every notification sent while a listener is disconnected, and ``PgBus`` calls its
resync callbacks after each reconnect so the replica can rebuild what it keeps
in memory from the tables.

- ``LocalBus``: the same interface within one process (SQLite: one coordinator).
- ``PgBus``: one dedicated asyncpg connection LISTENs on one channel and is
  checked every ``ping_s``; a lost connection is re-opened with capped backoff,
  then the resync callbacks run. Publishing uses a second connection (re-opened
  on demand). A note whose encoding exceeds ``MAX_PAYLOAD`` bytes is refused
  (NOTIFY's limit is 8000); an undecodable notification on the channel is logged
  and dropped.

Handlers are plain functions called in the event loop for every note, including
the ones this replica published (``origin`` tells them apart); they must not
block. Replica mode's farm (``coordinator/farm/cluster.py``) runs on ``PgBus``: see
"Replicas (issue 16)" in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "shapefarm_bus"
MAX_PAYLOAD = 7900  # bytes of JSON; PostgreSQL refuses NOTIFY payloads from 8000
MAX_ID_CHARS = 200

Kind = Literal["job", "queue", "user", "agent", "settings"]


class Note(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``kind`` names what changed; ``id`` which one ("" for the queue as a whole);
    ``action`` an optional verb for the receiver (e.g. "cancel" for an agent);
    ``origin`` the publishing replica (filled in by the bus)."""

    kind: Kind
    id: str = ""
    action: str = ""
    origin: str = ""


Handler = Callable[[Note], None]
Resync = Callable[[], Awaitable[None]]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Note)


class PayloadTooLargeError(ValueError):
    """The note does not fit in one notification."""


def encode(note: Note) -> str:
    if len(note.id) > MAX_ID_CHARS or len(note.action) > MAX_ID_CHARS:
        raise PayloadTooLargeError(f"note fields are limited to {MAX_ID_CHARS} characters")
    data = _encoder.encode(note)
    if len(data) > MAX_PAYLOAD:
        raise PayloadTooLargeError(f"note is {len(data)} bytes; at most {MAX_PAYLOAD}")
    return data.decode()


def decode(payload: str) -> Note:
    """The note in a notification; ``msgspec.ValidationError``/``DecodeError`` if it is none."""
    return _decoder.decode(payload)


class Bus(Protocol):
    replica: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, note: Note) -> None: ...

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every note from now on; returns the unsubscribe function."""
        ...

    def on_resync(self, callback: Resync) -> None:
        """Run ``callback`` after notes may have been lost (a reconnect)."""
        ...


class _Handlers:
    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self._resyncs: list[Resync] = []

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        self._handlers.append(handler)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.remove(handler)

        return unsubscribe

    def on_resync(self, callback: Resync) -> None:
        self._resyncs.append(callback)

    def deliver(self, note: Note) -> None:
        for handler in list(self._handlers):
            try:
                handler(note)
            except Exception:
                log.exception("bus handler failed on %s", note)

    async def resync(self) -> None:
        for callback in list(self._resyncs):
            try:
                await callback()
            except Exception:
                log.exception("bus resync callback failed")


def _replica_id() -> str:
    return secrets.token_hex(6)


class LocalBus(_Handlers):
    """The bus within one process: publish delivers to the subscribers at once."""

    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        self.replica = replica or _replica_id()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, note: Note) -> None:
        encode(note)  # the same limits as between replicas
        self.deliver(msgspec.structs.replace(note, origin=self.replica))


def asyncpg_dsn(db_url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError("the PostgreSQL bus needs a postgresql:// database URL")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgBus(_Handlers):
    """The bus over PostgreSQL ``LISTEN/NOTIFY`` (see the module's docstring)."""

    def __init__(
        self,
        dsn: str,
        replica: str | None = None,
        ping_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.replica = replica or _replica_id()
        self.dsn = dsn
        self.ping_s, self.connect_timeout_s, self.max_backoff_s = (
            ping_s,
            connect_timeout_s,
            max_backoff_s,
        )
        self._listener: Any = None  # asyncpg.Connection (asyncpg ships no types)
        self._publisher: Any = None
        self._publish_lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    async def _connect(self) -> Any:
        import asyncpg  # the postgres extra; SQLite installs never import it

        return await asyncpg.connect(
            self.dsn,
            timeout=self.connect_timeout_s,
            server_settings={"application_name": f"shapefarm-bus-{self.replica}"},
        )

    async def start(self) -> None:
        """Connect and LISTEN; raises if the database cannot be reached now."""
        await self._listen()
        self._task = asyncio.create_task(self._watch(), name=f"bus-{self.replica}")

    @property
    def listener_pid(self) -> int | None:
        """The server process of the listening connection (for tests and diagnostics)."""
        return None if self._listener is None else int(self._listener.get_server_pid())

    async def _listen(self) -> None:
        conn = await self._connect()
        try:
            conn.add_termination_listener(lambda _conn: self._lost.set())
            await conn.add_listener(CHANNEL, self._received)
        except BaseException:
            await conn.close(timeout=1)
            raise
        self._listener = conn
        self._lost.clear()
        self.connected.set()

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            note = decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("dropped a malformed bus notification (%d bytes): %s", len(payload), exc)
            return
        self.deliver(note)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ping_s):
                    await self._lost.wait()
            if not self._lost.is_set() and await self._alive():
                continue
            self.connected.clear()
            await self._drop_listener()
            await self._reconnect()
            self.reconnects += 1
            await self.resync()

    async def _alive(self) -> bool:
        conn = self._listener
        try:
            async with asyncio.timeout(self.ping_s):
                await conn.execute("SELECT 1")
        except Exception:  # any failure of the ping means: start over
            return False
        return True

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _reconnect(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._listen()
                log.info("bus: listening again after a lost connection")
                return
            except Exception as exc:  # refused, timed out, auth, server starting: all retried
                log.warning("bus: cannot reconnect (%s); retrying in %.2f s", exc, backoff)
            await asyncio.sleep(backoff)  # backoff between attempts, not synchronisation
            backoff = min(self.max_backoff_s, backoff * 2)

    async def publish(self, note: Note) -> None:
        payload = encode(msgspec.structs.replace(note, origin=self.replica))
        async with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.is_closed():
                        self._publisher = await self._connect()
                    await self._publisher.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                    return
                except Exception:
                    broken, self._publisher = self._publisher, None
                    if broken is not None:
                        with contextlib.suppress(Exception):
                            broken.terminate()
                    if attempt == 2:
                        raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for conn in (self._listener, self._publisher):
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
        self._listener = self._publisher = None
        self.connected.clear()


def make_bus(db_url: str, replica: str | None = None) -> Bus:
    """``PgBus`` for a PostgreSQL database, ``LocalBus`` otherwise (SQLite)."""
    if make_url(db_url).get_backend_name() == "postgresql":
        return PgBus(asyncpg_dsn(db_url), replica)
    return LocalBus(replica)
