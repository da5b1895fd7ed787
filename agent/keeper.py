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
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class _Held:
    """A held result's write: waiting out the grace, waiting for a slot, or running."""

    size: int  # bytes of its artifacts
    hurry: asyncio.Event = field(default_factory=asyncio.Event)  # set: write now
    started: bool = False  # the write began (it is then never cancelled)
    task: asyncio.Task[None] = field(init=False)


class Keeper:
    def __init__(self, spool: Spool, write_after_s: float | None = None) -> None:
        self.spool = spool
        self.write_after_s = WRITE_AFTER_S if write_after_s is None else write_after_s
        self._held: dict[JobKey, _Held] = {}  # oldest first
        self.held_bytes = 0
        self._slots = asyncio.Semaphore(MAX_WRITES)
        self._deletes: set[asyncio.Task[None]] = set()

    async def keep(self, result: SpooledResult) -> SpooledResult:
        """Hold ``result`` in the spool (uploadable at once) and schedule its write to disk;
        returns it with its digests. Waits first while :data:`MAX_HELD` results or
        :data:`MAX_HELD_BYTES` are held."""
        while self._held and (len(self._held) >= MAX_HELD or self.held_bytes >= MAX_HELD_BYTES):
            for waiting in list(self._held.values())[:MAX_WRITES]:
                waiting.hurry.set()  # the oldest first: free room for this one
            tasks = [h.task for h in self._held.values()]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        result = self.spool.hold(result)
        held = _Held(sum(len(data) for _, data in result.artifacts))
        name = f"spool {result.job}/{result.attempt}"
        held.task = asyncio.create_task(self._write(result, held), name=name)
        self._held[result.key] = held
        self.held_bytes += held.size
        held.task.add_done_callback(lambda _: self._ended(result.key, held))
        return result

    def writing(self, key: JobKey) -> bool:
        """Whether ``key`` is held and not yet on disk (its write pending or running)."""
        return key in self._held

    async def discard(self, key: JobKey) -> None:
        """Delete the result: dropped from memory if its write has not begun, else after
        that write (and from disk)."""
        held = self._held.get(key)
        if held is not None and not held.started:
            held.task.cancel()  # in its grace or waiting for a slot: it will never write
            await asyncio.wait([held.task])
            if self.spool.forget_held(key):
                return  # nothing on disk: no thread, no file system
        elif held is not None:
            await asyncio.wait([held.task])
        await asyncio.to_thread(self.spool.delete, *key)

    def discard_later(self, key: JobKey) -> None:
        """:meth:`discard` in the background (the caller need not wait for the disk)."""
        task = asyncio.create_task(self.discard(key), name=f"unspool {key[0]}/{key[1]}")
        self._deletes.add(task)
        task.add_done_callback(self._deleted)

    async def flush(self) -> None:
        """Write every held result now, and wait until every write and delete started so
        far has ended."""
        while self._held or self._deletes:
            for held in self._held.values():
                held.hurry.set()
            await asyncio.wait([*(h.task for h in self._held.values()), *self._deletes])

    async def _write(self, result: SpooledResult, held: _Held) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.write_after_s):
                await held.hurry.wait()
        async with self._slots:
            held.started = True
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

    def _ended(self, key: JobKey, held: _Held) -> None:
        if self._held.get(key) is held:
            del self._held[key]
            self.held_bytes -= held.size

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deletes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("could not delete a spooled result: %s", task.exception())
