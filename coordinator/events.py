"""In-process publish/subscribe for live pages (SSE) and the admin dashboard.

Subscribers get a bounded queue; a slow browser drops its oldest events rather
than growing memory, which is harmless because every event only says "topic X
changed" and the page re-renders the current state.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class EventHub:
    def __init__(self, queue_size: int = 64) -> None:
        self._subs: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._queue_size = queue_size

    def publish(self, topic: str, event: str = "changed") -> None:
        for queue in self._subs.get(topic, ()):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

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

    def subscribers(self, topic: str) -> int:
        return len(self._subs.get(topic, ()))
