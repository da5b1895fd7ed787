"""The replicas' bus: typed small notes, LISTEN/NOTIFY between connections, reconnect
with resync; the in-process form for SQLite."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from coordinator.store.bus import (
    CHANNEL,
    MAX_PAYLOAD,
    LocalBus,
    Note,
    PayloadTooLargeError,
    PgBus,
    asyncpg_dsn,
    make_bus,
)


class Inbox:
    """Notes a handler received, with a way to wait for the next matching one."""

    def __init__(self) -> None:
        self.notes: list[Note] = []
        self._changed = asyncio.Event()

    def __call__(self, note: Note) -> None:
        self.notes.append(note)
        self._changed.set()

    async def wait_for(self, note_id: str, within: float = 10) -> Note:
        async with asyncio.timeout(within):
            while True:
                for note in self.notes:
                    if note.id == note_id:
                        return note
                self._changed.clear()
                await self._changed.wait()


async def test_local_bus_delivers_to_subscribers_and_refuses_big_notes() -> None:
    bus = make_bus("sqlite+aiosqlite:///x.db", replica="solo")
    assert isinstance(bus, LocalBus)
    inbox, other = Inbox(), Inbox()
    bus.subscribe(inbox)
    unsubscribe = bus.subscribe(other)
    await bus.publish(Note("job", "j1"))
    unsubscribe()
    await bus.publish(Note("agent", "a1", action="cancel"))
    assert inbox.notes == [Note("job", "j1", origin="solo"), Note("agent", "a1", "cancel", "solo")]
    assert other.notes == [Note("job", "j1", origin="solo")]
    with pytest.raises(PayloadTooLargeError):
        await bus.publish(Note("job", "x" * MAX_PAYLOAD))
    assert len(inbox.notes) == 2


def test_dsn_for_asyncpg() -> None:
    url = "postgresql+asyncpg://u:p%40ss@127.0.0.1:5433/db"
    assert asyncpg_dsn(url) == "postgresql://u:p%40ss@127.0.0.1:5433/db"
    with pytest.raises(ValueError, match="postgresql"):
        asyncpg_dsn("sqlite+aiosqlite:///x.db")


@pytest.mark.slow
async def test_pg_bus_between_connections_reconnects_and_resyncs(postgres_url: str) -> None:
    dsn = asyncpg_dsn(postgres_url)
    a = PgBus(dsn, replica="a", ping_s=0.5)
    b = PgBus(dsn, replica="b", ping_s=0.5)
    await a.start()
    await b.start()
    admin = await asyncpg.connect(dsn)
    try:
        seen_by_b, seen_by_a = Inbox(), Inbox()
        b.subscribe(seen_by_b)
        a.subscribe(seen_by_a)
        resynced = asyncio.Event()

        async def resync() -> None:
            resynced.set()

        b.on_resync(resync)

        await a.publish(Note("job", "job-1"))
        assert await seen_by_b.wait_for("job-1") == Note("job", "job-1", origin="a")
        await seen_by_a.wait_for("job-1")  # the publisher hears its own notes too

        # Neither a note that does not fit nor garbage on the channel gets through.
        with pytest.raises(PayloadTooLargeError):
            await a.publish(Note("job", "y" * 8000))
        await admin.execute("SELECT pg_notify($1, $2)", CHANNEL, '{"kind": "bogus"}')
        await admin.execute("SELECT pg_notify($1, $2)", CHANNEL, "not json")

        # The server ends b's listening connection: b reconnects, then resyncs.
        pid = b.listener_pid
        assert pid is not None
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        async with asyncio.timeout(15):
            await resynced.wait()
        assert b.reconnects == 1 and b.listener_pid not in (None, pid)
        await a.publish(Note("queue", "after-reconnect"))
        await seen_by_b.wait_for("after-reconnect")
        assert [n.id for n in seen_by_b.notes] == ["job-1", "after-reconnect"]

        # The publisher's connection dies too: the next publish opens a new one.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'shapefarm-bus-a' AND pid <> $1",
            a.listener_pid,
        )
        await a.publish(Note("user", "7"))
        await seen_by_b.wait_for("7")
    finally:
        await admin.close()
        await a.close()
        await b.close()


@pytest.mark.slow
async def test_pg_bus_start_fails_clearly_without_a_database() -> None:
    bus = PgBus("postgresql://nobody:x@127.0.0.1:1/none", connect_timeout_s=2)
    with pytest.raises(OSError):
        await bus.start()
