"""Finished results on their way to the coordinator: held, written, discarded.

A result is held by the spool at once (listed, uploadable from memory) and its upload
goes out without waiting for the disk. It is written to disk only if the coordinator
has not acknowledged it within :data:`WRITE_AFTER_S`: the spool is there for results the
coordinator did not take (it is unreachable, restarting, slow), and writing every model
with three fsyncs only to delete it a few milliseconds later cost the agent more CPU
than the whole upload, and the volunteer's disk a model's worth of writes per job.

What that trades: a result is on disk ``WRITE_AFTER_S`` plus the write's time after it
was generated, unless acknowledged first. If the agent's process dies before that, the
result is lost like one being generated (the coordinator requeues the job when the
lease lapses). A graceful stop (``flush``) writes every result still held at once.

A delete (the coordinator acknowledged the result, or cancelled its job) drops a result
whose write has not begun, or waits for a running write, so a late write never brings
back a result already deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.spool import JobKey, Spool, SpooledResult, SpoolError

logger = logging.getLogger(__name__)

# A result not acknowledged this long after it was held is written to disk.
WRITE_AFTER_S = 1.0
# Disk writes in flight at most (each in a worker thread).
MAX_WRITES = 4
# Results held in memory and not yet on disk at most, and their bytes: the next result
# waits, and the oldest held ones are written at once, while there are this many (bounds
# the memory of results generated faster than the coordinator acknowledges them).
MAX_HELD = 32
MAX_HELD_BYTES = 128 * 2**20


class Keeper:
    def __init__(self, spool: Spool, write_after_s: float | None = None) -> None:
        self.spool = spool
        self.write_after_s = WRITE_AFTER_S if write_after_s is None else write_after_s
        # Every held result's write: waiting out the grace, waiting for a slot or running.
        self._writes: dict[JobKey, asyncio.Task[None]] = {}
        self._hurry: dict[JobKey, asyncio.Event] = {}  # set: write now, no more grace
        self._started: set[JobKey] = set()  # writes that began (they are never cancelled)
        self._sizes: dict[JobKey, int] = {}  # bytes of each held result
        self.held_bytes = 0
        self._slots = asyncio.Semaphore(MAX_WRITES)
        self._deletes: set[asyncio.Task[None]] = set()

    async def keep(self, result: SpooledResult) -> SpooledResult:
        """Hold ``result`` in the spool (uploadable at once) and schedule its write to disk;
        returns it with its digests. Waits first while :data:`MAX_HELD` results or
        :data:`MAX_HELD_BYTES` are held."""
        while self._writes and (len(self._writes) >= MAX_HELD or self.held_bytes >= MAX_HELD_BYTES):
            for event in list(self._hurry.values())[:MAX_WRITES]:
                event.set()  # the oldest first: free room for this one
            await asyncio.wait(list(self._writes.values()), return_when=asyncio.FIRST_COMPLETED)
        held = self.spool.hold(result)
        hurry = asyncio.Event()
        task = asyncio.create_task(
            self._write(held, hurry), name=f"spool {held.job}/{held.attempt}"
        )
        self._writes[held.key] = task
        self._hurry[held.key] = hurry
        self._sizes[held.key] = size = sum(len(data) for _, data in held.artifacts)
        self.held_bytes += size
        task.add_done_callback(lambda done: self._ended(held.key, done))
        return held

    def writing(self, key: JobKey) -> bool:
        """Whether ``key`` is held and not yet on disk (its write pending or running)."""
        return key in self._writes

    async def discard(self, key: JobKey) -> None:
        """Delete the result: dropped from memory if its write has not begun, else after
        that write (and from disk)."""
        write = self._writes.get(key)
        if write is not None and key not in self._started:
            write.cancel()  # in its grace or waiting for a slot: it will never write
            await asyncio.wait([write])
            if self.spool.forget_held(key):
                return  # nothing on disk: no thread, no file system
        elif write is not None:
            await asyncio.wait([write])
        await asyncio.to_thread(self.spool.delete, *key)

    def discard_later(self, key: JobKey) -> None:
        """:meth:`discard` in the background (the caller need not wait for the disk)."""
        task = asyncio.create_task(self.discard(key), name=f"unspool {key[0]}/{key[1]}")
        self._deletes.add(task)
        task.add_done_callback(self._deleted)

    async def flush(self) -> None:
        """Write every held result now, and wait until every write and delete started so
        far has ended."""
        while self._writes or self._deletes:
            for event in self._hurry.values():
                event.set()
            await asyncio.wait([*self._writes.values(), *self._deletes])

    async def _write(self, result: SpooledResult, hurry: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.write_after_s):
                await hurry.wait()
        async with self._slots:
            self._started.add(result.key)
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
            self._hurry.pop(key, None)
            self._started.discard(key)
            self.held_bytes -= self._sizes.pop(key, 0)

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deletes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("could not delete a spooled result: %s", task.exception())
