"""The runner's side that faces the connection: an ordered outbox and result uploads.

Messages (accepted, progress, failed) and result uploads leave in the order they
were posted, over whichever :class:`Link` is attached. A result is taken from the
spool (its memory, or else its disk) only when its turn comes, sent at most once per
link, and counted as pending until its ``result_ack``; attaching a new link queues
every spooled result again.
"""

from __future__ import annotations

import asyncio
import logging

from agent.batches import Link, _Upload
from agent.keeper import Keeper
from agent.spool import JobKey, SpoolCorruptError
from protocol import AgentMessage, Failed

logger = logging.getLogger(__name__)


class Outbox:
    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper
        self.spool = keeper.spool
        self.link: Link | None = None
        self._queue: asyncio.Queue[AgentMessage | _Upload] = asyncio.Queue()
        self._uploaded: set[JobKey] = set()  # sent on the current link, ack pending
        self._acked = asyncio.Event()

    @property
    def controls(self) -> bool:
        """Whether the current link speaks protocol v2 (``status``, ``declined``)."""
        return bool(getattr(self.link, "controls", False))

    def attach(self, link: Link) -> None:
        """Use a freshly welcomed connection; queue every spooled result for upload."""
        self._drop()
        self.link = link
        self._uploaded.clear()
        for key in self.spool.pending():
            self._queue.put_nowait(_Upload(key))

    def detach(self) -> None:
        self.link = None
        self._drop()
        self._uploaded.clear()
        self._acked.set()

    async def pump(self, link: Link) -> None:
        """Send the outbox over ``link`` until the connection fails (then it raises)."""
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Upload):
                    await self._upload(link, item.key)
                else:
                    await link.send(item)
            finally:
                self._queue.task_done()

    def post(self, message: AgentMessage) -> None:
        # With no connection, progress and failures have nobody to go to: the coordinator
        # requeues the lease on disconnect, so dropping them is safe.
        if self.link is not None:
            self._queue.put_nowait(message)

    def upload(self, key: JobKey) -> None:
        """Queue a spooled result for upload, if connected (``attach`` queues it otherwise)."""
        if self.link is not None:
            self._queue.put_nowait(_Upload(key))

    def acked(self, key: JobKey) -> None:
        """The coordinator answered the upload of ``key``: it is no longer pending."""
        self._uploaded.discard(key)
        self._acked.set()

    async def join(self) -> None:
        """Until everything posted so far has been sent."""
        await self._queue.join()

    async def wait_settled(self) -> None:
        """Until the outbox is sent and every uploaded result acknowledged."""
        await self._queue.join()
        while self._uploaded and self.link is not None:
            self._acked.clear()
            await self._acked.wait()

    def _drop(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()

    async def _upload(self, link: Link, key: JobKey) -> None:
        if key in self._uploaded or key not in self.spool:
            return
        entry = self.spool.recall(key)  # a result of this process: no thread, no read
        try:
            if entry is None:
                entry = await asyncio.to_thread(self.spool.load, *key)
        except SpoolCorruptError as exc:
            await link.send(Failed(job=key[0], attempt=key[1], reason=str(exc)[:2000]))
            return
        size = sum(len(data) for _, data in entry.artifacts)
        if size > link.limits.max_result_bytes:
            reason = f"result of {size} bytes exceeds the limit of {link.limits.max_result_bytes}"
            await self.keeper.discard(key)
            await link.send(Failed(job=key[0], attempt=key[1], reason=reason, retryable=False))
            return
        self._uploaded.add(key)
        await link.upload(entry)
        logger.info("uploaded result %s/%d (%d bytes)", key[0], key[1], size)
