"""How many live-update streams (SSE) may be open: per session, user, address, and in all.

Every open stream holds a socket, a file descriptor, for minutes. Without caps one
logged-in user opening a thousand streams ran the coordinator out of descriptors
and everybody else's requests failed. The limiter is plain bookkeeping (no I/O);
the views ask it for a :class:`StreamSlot` before they start streaming and answer
429 when it refuses (see ``web.sse_response``).
"""

from __future__ import annotations

import resource
from collections import Counter
from dataclasses import dataclass

from coordinator.settings import Settings

# Descriptors kept for everything that is not a stream (pages, agents, the
# database, log files) when the connection limit is derived from RLIMIT_NOFILE.
RESERVED_FDS = 128


class StreamLimitError(Exception):
    """A stream refused by a cap; the message says which and is safe to show."""


def nofile_limit() -> int:
    """This process's soft RLIMIT_NOFILE (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def max_connections(settings: Settings) -> int:
    """uvicorn's ``limit_concurrency``: configured, or what the descriptors allow."""
    return settings.max_connections or max(32, nofile_limit() - RESERVED_FDS)


@dataclass(frozen=True)
class StreamCaps:
    per_session: int
    per_user: int
    per_address: int
    total: int

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamCaps:
        # A quarter of the descriptors at most: streams never starve page loads.
        total = settings.streams_max or max(8, nofile_limit() // 4)
        return cls(
            settings.streams_per_session,
            settings.streams_per_user,
            settings.streams_per_address,
            total,
        )


class StreamSlot:
    """One open stream's place under the caps; :meth:`release` gives it back once."""

    def __init__(self, limiter: StreamLimiter, keys: tuple[str, ...]) -> None:
        self._limiter = limiter
        self._keys: tuple[str, ...] | None = keys

    def release(self) -> None:
        if self._keys is not None:
            self._limiter._release(self._keys)
            self._keys = None


class StreamLimiter:
    def __init__(self, caps: StreamCaps) -> None:
        self.caps = caps
        self._open: Counter[str] = Counter()

    def acquire(self, session: str | None, user: int | None, address: str) -> StreamSlot:
        """A slot for a new stream, or :class:`StreamLimitError` naming the cap hit.

        Checked and counted with nothing awaited in between, so parallel requests
        cannot all pass one check."""
        wanted = [("all", self.caps.total, "The server has too many live updates open")]
        wanted.append((f"addr:{address}", self.caps.per_address, "Too many from your address"))
        if user is not None:
            wanted.append((f"user:{user}", self.caps.per_user, "Too many for your account"))
        if session is not None:
            wanted.append((f"session:{session}", self.caps.per_session, "Too many in this browser"))
        for key, cap, why in wanted:
            if self._open[key] >= cap:
                raise StreamLimitError(
                    f"{why}: {cap} live-update streams at most. Close some tabs, or wait "
                    "and reload; the pages work without live updates."
                )
        keys = tuple(key for key, _, _ in wanted)
        self._open.update(keys)
        return StreamSlot(self, keys)

    def _release(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    def open(self, key: str = "all") -> int:
        """Streams open under ``key`` (``all``, ``user:<id>``, ``addr:<ip>``, ``session:<h>``)."""
        return self._open.get(key, 0)
