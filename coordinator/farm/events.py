"""In-process publish/subscribe for live pages (SSE) and the admin dashboard.

Subscribers get a bounded queue; a slow browser drops its oldest events rather
than growing memory, which is harmless because every event only says "topic X
changed" and the page re-renders the current state.

Many viewers of one topic should not each read the database after every
change: :meth:`EventHub.shared` gives them one load per change of the topic
(a ``changed`` event bumps its version; ``progress`` events, about live state
kept in memory, do not).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class EventHub:
    def __init__(self, queue_size: int = 64) -> None:
        self._subs: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._queue_size = queue_size
        # Only topics with subscribers have versions and shared loads.
        self._versions: dict[str, int] = {}
        self._shared: dict[tuple[str, str], tuple[int, asyncio.Future[Any]]] = {}
        self.loads = 0  # shared loads started (tests and benchmarks)

    def publish(self, topic: str, event: str = "changed") -> None:
        subs = self._subs.get(topic)
        if not subs:
            return
        if event != "progress":
            self._versions[topic] = self._versions.get(topic, 0) + 1
        for queue in subs:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def shared(self, topic: str, name: str, load: Callable[[], Awaitable[T]]) -> T:
        """``load()``'s value as of the topic's latest change, one call for all callers.

        Call it while subscribed to ``topic``. The version is read before the load
        starts, so a change during the load makes the next caller load again.
        """
        key = (topic, name)
        version = self._versions.get(topic, 0)
        entry = self._shared.get(key)
        if entry is None or entry[0] != version:
            future: asyncio.Future[T] = asyncio.ensure_future(load())
            self.loads += 1
            entry = (version, future)
            if self._subs.get(topic):
                self._shared[key] = entry
                future.add_done_callback(lambda done: self._forget_failed(key, done))
        # One viewer leaving (cancelled) must not cancel the load the others wait on.
        value: T = await asyncio.shield(entry[1])
        return value

    def _forget_failed(self, key: tuple[str, str], future: asyncio.Future[Any]) -> None:
        entry = self._shared.get(key)
        if (
            entry is not None
            and entry[1] is future
            and (future.cancelled() or future.exception() is not None)
        ):
            del self._shared[key]

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[asyncio.Queue[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue(self._queue_size)
        for topic in topics:
            self._subs[topic].add(queue)
        try:
            yield queue
        finally:
            for topic in topics:
                subs = self._subs.get(topic)
                if subs is not None:
                    subs.discard(queue)
                    if not subs:
                        del self._subs[topic]
                        self._versions.pop(topic, None)
                        for key in [k for k in self._shared if k[0] == topic]:
                            del self._shared[key]

    def subscribers(self, topic: str) -> int:
        return len(self._subs.get(topic, ()))
