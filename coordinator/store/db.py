"""Engine and session factory; SQLite gets WAL and foreign keys switched on.

The coordinator's hot path (dispatch, results, lease changes) does not use ORM
sessions: with aiosqlite every statement costs three or four thread hand-offs
(cursor, execute, fetch, close) and the event loop was busy with those alone.
:class:`Writer` runs short units of work written against a synchronous
:class:`~sqlalchemy.engine.Connection` instead, all units that arrive while a
batch is running together in one transaction (group commit), each in its own
unit rolled back alone if it fails (the batch is then run again with a savepoint
per unit).

On SQLite a batch first runs **on the event loop itself**, and only goes to the
worker thread when SQLite is busy (another connection holds the write lock: the
loop never waits for a lock). A unit is a few point statements, tens of
microseconds, most of it SQLAlchemy's Python that holds the GIL wherever it runs;
the hand-off to the thread and back cost more than that (two wake-ups and two GIL
hand-overs). WAL commits do not fsync (``synchronous=NORMAL``), and the writer's
connection does not checkpoint on commit: every ``CHECKPOINT_EVERY`` inline commits
a checkpoint runs in the worker thread instead, so the loop never copies the WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Connection], Any]

# SQLite page cache per connection (negative = KiB): the job table's hot pages stay in memory.
SQLITE_CACHE_KIB = 16 * 1024
BUSY_TIMEOUT_MS = 30_000  # in the worker thread: wait for another connection's write lock
CHECKPOINT_EVERY = 200  # inline commits between two WAL checkpoints (in the worker thread)
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


@contextlib.asynccontextmanager
async def session_if_needed(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """An ORM session for work that usually does not need one (a submission reads the
    user's daily usage only the first time): closed through SQLAlchemy's own exit (in a
    task of its own, so it completes even if the caller is cancelled) only when it did
    something; one that never touched the database holds no connection and is just
    dropped, saving that task's trips around the event loop on the hot path."""
    session = sessions()
    try:
        yield session
    except BaseException as exc:
        await session.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    if session.in_transaction() or session.sync_session.identity_map or session.new:
        await session.__aexit__(None, None, None)
    else:
        session.sync_session.close()  # nothing to release: no connection, no objects


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit is durable against a process crash, not a power cut.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # One writer at a time anyway; a busy timeout beats "database is locked".
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # A Session class of its own, so listeners (the API-key cache's) see only this
    # app's sessions, not every app's in the process.
    own = type("CoordinatorSession", (Session,), {})
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=own)


def _sqlite_file(engine: AsyncEngine) -> str | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def _sync_sqlite_engine(path: str) -> Engine:
    """A plain sqlite3 engine on the same file, driven by one worker thread.

    Transactions start with BEGIN IMMEDIATE (the write lock up front, so reads
    inside a unit see what it writes over) and savepoints work, which the
    driver's own transaction handling gets wrong (SQLAlchemy's pysqlite recipe).
    """
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, record)
        dbapi_conn.isolation_level = None  # we say BEGIN ourselves
        # Commits may run on the event loop: the Writer checkpoints in its thread instead.
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _run_batch(conn: Connection, batch: list[Work]) -> list[tuple[bool, Any]]:
    """Run the units one after another; if one fails, run them again, each in a savepoint.

    Units are plain database work, so after a rollback running them again is
    safe; the common case then pays for no savepoints at all.
    """
    try:
        return [(True, work(conn)) for work in batch]
    except Exception:
        conn.rollback()
        conn.begin()
    outcomes: list[tuple[bool, Any]] = []
    for work in batch:
        savepoint = conn.begin_nested()
        try:
            value = work(conn)
        except Exception as exc:  # handed to that unit's caller
            savepoint.rollback()
            outcomes.append((False, exc))
        else:
            savepoint.commit()
            outcomes.append((True, value))
    return outcomes


def _busy(exc: BaseException) -> bool:
    """SQLite said another connection holds the lock it needs (SQLITE_BUSY/LOCKED)."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


class _Units:
    """Runs units of database work, all that arrive together in one go: on SQLite on the
    event loop (a worker thread when SQLite is busy), on PostgreSQL through the async
    engine.

    ``await units.run(work)`` returns ``work(conn)``. Subclasses say how a batch runs
    (a write transaction, or plain reads).
    """

    thread_name = "db"

    def __init__(self, engine: AsyncEngine) -> None:
        self._async = engine
        path = _sqlite_file(engine)
        self._sync = self._sync_engine(path) if path else None
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix=self.thread_name) if self._sync else None
        )
        # The SQLite connection, kept open between batches: checking one out of the pool
        # and back in per batch (with its reset and events) cost about as much as the
        # batch's statements. One batch at a time uses it: on the loop or in the thread.
        self._conn: Connection | None = None
        self._busy_ms = -1  # the connection's busy timeout as last set
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (for tests and metrics)
        self.units = 0
        self.inline_batches = 0  # of them, run on the event loop

    def _sync_engine(self, path: str) -> Engine:
        return _sync_sqlite_engine(path)

    async def run(self, work: Callable[[Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=self.thread_name)
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            works = [work for work, _ in batch]
            try:
                outcomes = self._inline(works) if self._sync is not None else None
                if outcomes is None:
                    outcomes = await self._execute(works)
                else:
                    self.inline_batches += 1
                    await self._after_inline()
            except Exception as exc:
                # The commit itself failed: nothing of this batch happened.
                log.warning("database batch of %d units failed: %s", len(batch), exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.units += len(batch)
            for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
                if future.done():  # its caller gave up; the work still happened
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def _execute(self, works: list[Work]) -> list[tuple[bool, Any]]:
        raise NotImplementedError

    def _batch(self, works: list[Work]) -> Callable[[Connection], list[tuple[bool, Any]]]:
        """The SQLite batch as one call on the connection (a transaction, or reads)."""
        raise NotImplementedError

    def _inline(self, works: list[Work]) -> list[tuple[bool, Any]] | None:
        """Run the batch on the event loop without waiting for any lock; None if SQLite
        was busy and nothing happened (the worker thread runs it then)."""
        try:
            return self._on_connection(self._batch(works), 0)
        except Exception as exc:
            if _busy(exc):
                return None
            raise

    async def _after_inline(self) -> None:
        """After an inline batch (the Writer checkpoints now and then)."""

    def _in_thread(self, batch: Callable[[Connection], T]) -> T:
        """``batch(conn)`` in the worker thread, waiting for locks (``BUSY_TIMEOUT_MS``)."""
        return self._on_connection(batch, BUSY_TIMEOUT_MS)

    def _on_connection(self, batch: Callable[[Connection], T], busy_ms: int) -> T:
        """``batch(conn)`` on the kept connection; a failure discards the connection and
        the next batch opens a new one.

        Discarded, not returned to the pool: after a failed COMMIT SQLite keeps the
        transaction open, and the pool's reset (the driver's rollback) does nothing
        on a connection whose transactions we begin ourselves."""
        assert self._sync is not None
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn, self._busy_ms = self._sync.connect(), -1
        conn = self._conn
        try:
            if busy_ms != self._busy_ms:
                _pragma(conn, f"busy_timeout={busy_ms:d}")
                self._busy_ms = busy_ms
            return batch(conn)
        except BaseException:
            self._conn = None
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
            self._executor.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()


class Writer(_Units):
    """Runs units of database work off the event loop, many per transaction.

    ``await writer.run(work)`` returns ``work(conn)`` once the transaction it
    ran in has committed, so callers may announce the change right away. A unit
    must only touch the database (it may be rolled back and must not await).
    """

    thread_name = "db-writer"

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._since_checkpoint = 0

    def _batch(self, works: list[Work]) -> Callable[[Connection], list[tuple[bool, Any]]]:
        def transaction(conn: Connection) -> list[tuple[bool, Any]]:
            conn.begin()  # BEGIN IMMEDIATE: busy here (inline) means nothing ran
            outcomes = _run_batch(conn, works)
            conn.commit()
            return outcomes

        return transaction

    async def _after_inline(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):  # a checkpoint is an optimisation
                await loop.run_in_executor(self._executor, self._in_thread, _checkpoint)

    async def _execute(self, works: list[Work]) -> list[tuple[bool, Any]]:
        if self._sync is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._in_thread, self._batch(works))
        async with self._async.connect() as aconn:
            await aconn.begin()
            outcomes = await aconn.run_sync(_run_batch, works)
            await aconn.commit()
            return outcomes


def _pragma(conn: Connection, pragma: str) -> None:
    """A PRAGMA straight to the sqlite3 connection (no statement machinery around it)."""
    driver: Any = conn.connection.driver_connection
    driver.execute(f"PRAGMA {pragma}").close()


def _checkpoint(conn: Connection) -> None:
    _pragma(conn, "wal_checkpoint(PASSIVE)")


def _read_batch(conn: Connection, batch: list[Work]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for work in batch:
        try:
            outcomes.append((True, work(conn)))
        except Exception as exc:  # handed to that unit's caller
            outcomes.append((False, exc))
    return outcomes


class Reader(_Units):
    """Point reads of the hot API routes: all reads that arrive together in one batch.

    Through aiosqlite and an ORM session a read cost several thread hand-offs plus
    the session's bookkeeping; here the reads that queue up while a batch runs go
    in the next one, on a connection of their own (SQLite WAL: readers never wait
    for the writer and see what it committed), on the event loop unless SQLite is
    busy. Units must only read.
    """

    thread_name = "db-reader"

    def _sync_engine(self, path: str) -> Engine:
        engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _batch(self, works: list[Work]) -> Callable[[Connection], list[tuple[bool, Any]]]:
        def reads(conn: Connection) -> list[tuple[bool, Any]]:
            try:
                outcomes = _read_batch(conn, works)
            finally:
                conn.rollback()  # end the read transaction: see later commits
            for ok, value in outcomes:
                if not ok and _busy(value):
                    raise value  # reads are safe to run again: in the thread, waiting
            return outcomes

        return reads

    async def _execute(self, works: list[Work]) -> list[tuple[bool, Any]]:
        if self._sync is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._in_thread, self._batch(works))
        async with self._async.connect() as aconn:
            return await aconn.run_sync(_read_batch, works)
