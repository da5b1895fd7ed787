"""Finished results on their way to the coordinator: held, written, discarded.

A result is held by the spool at once (listed, uploadable from memory) and written
to disk in a worker thread while its upload goes out, so the upload does not wait
for the disk's fsyncs (on a home PC's disk they may take longer than the upload).
A delete (the coordinator acknowledged the result, or cancelled its job) waits for
that write, so a late write never brings back a result already deleted.
"""

from __future__ import annotations

import asyncio
import logging

from agent.spool import JobKey, Spool, SpooledResult, SpoolError

logger = logging.getLogger(__name__)

# Writes in flight at most; the next result waits for one to end (bounds the memory
# of results generated faster than the disk takes them).
MAX_WRITES = 4


class Keeper:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._writes: dict[JobKey, asyncio.Task[None]] = {}
        self._deletes: set[asyncio.Task[None]] = set()

    async def keep(self, result: SpooledResult) -> SpooledResult:
        """Hold ``result`` in the spool and start its durable write; returns it with its
        digests. Waits first while :data:`MAX_WRITES` writes are in flight."""
        while len(self._writes) >= MAX_WRITES:
            await asyncio.wait(list(self._writes.values()), return_when=asyncio.FIRST_COMPLETED)
        held = self.spool.hold(result)
        task = asyncio.create_task(self._write(held), name=f"spool {held.job}/{held.attempt}")
        self._writes[held.key] = task
        task.add_done_callback(lambda done: self._ended(held.key, done))
        return held

    def writing(self, key: JobKey) -> bool:
        return key in self._writes

    async def discard(self, key: JobKey) -> None:
        """Delete the result (after its write, if one is running)."""
        write = self._writes.get(key)
        if write is not None:
            await asyncio.wait([write])
        await asyncio.to_thread(self.spool.delete, *key)

    def discard_later(self, key: JobKey) -> None:
        """:meth:`discard` in the background (the caller need not wait for the disk)."""
        task = asyncio.create_task(self.discard(key), name=f"unspool {key[0]}/{key[1]}")
        self._deletes.add(task)
        task.add_done_callback(self._deleted)

    async def flush(self) -> None:
        """Until every write and delete started so far has ended."""
        while self._writes or self._deletes:
            await asyncio.wait([*self._writes.values(), *self._deletes])

    async def _write(self, result: SpooledResult) -> None:
        try:
            await asyncio.to_thread(self.spool.put, result)
        except (SpoolError, OSError) as exc:
            # Still held in memory: it is uploaded from there, and lost only if this
            # process ends before the coordinator acknowledges it.
            logger.error(
                "could not write result %s/%d to the spool (%s): keeping it in memory",
                result.job,
                result.attempt,
                exc,
            )

    def _ended(self, key: JobKey, task: asyncio.Task[None]) -> None:
        if self._writes.get(key) is task:
            del self._writes[key]

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deletes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("could not delete a spooled result: %s", task.exception())
