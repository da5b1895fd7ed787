"""Leadership among replicas: a PostgreSQL session-level advisory lock held on a
dedicated connection. PostgreSQL releases it when that connection ends (the leader
died or was cut off), and another replica takes it at its next try.

The lock alone does not stop a leader that lost its connection but has not noticed
yet from claiming: each claim also checks the fencing epoch (``presence.lead`` and
``presence.fenced_claim``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

# The advisory lock's key: one per database, the same on every replica.
LOCK_KEY = 0x5368_6170_6546_6D01


class Leadership:
    def __init__(self, dsn: str, replica: str, timeout_s: float = 5.0) -> None:
        self.dsn, self.replica, self.timeout_s = dsn, replica, timeout_s
        self._conn: Any = None  # asyncpg.Connection (asyncpg ships no types)
        self.holding = False

    async def _connect(self) -> Any:
        import asyncpg  # the postgres extra; SQLite installs never import it

        return await asyncpg.connect(
            self.dsn,
            timeout=self.timeout_s,
            command_timeout=self.timeout_s,
            server_settings={
                "application_name": f"shapefarm-leader-{self.replica}",
                # A half-open connection is noticed within seconds, not hours.
                "tcp_keepalives_idle": "5",
                "tcp_keepalives_interval": "2",
                "tcp_keepalives_count": "3",
            },
        )

    async def attempt(self) -> bool:
        """Hold the lock after this call? Keeps holding it while the connection lives."""
        try:
            if self._conn is None or self._conn.is_closed():
                self.holding = False
                self._conn = await self._connect()
            if self.holding:
                await self._conn.execute("SELECT 1")  # the lock lives while this does
            else:
                self.holding = bool(
                    await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
                )
        except Exception as exc:  # refused, timed out, cut off: not (or no longer) leading
            if self.holding:
                log.warning("leadership lost with its connection: %s", exc)
            await self.resign()
        return self.holding

    async def resign(self) -> None:
        """Stop leading: unlock (at once, for the next leader) and close the connection
        (which releases the lock anyway, should the unlock fail)."""
        was, self.holding = self.holding, False
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        if was:
            with contextlib.suppress(Exception):
                await conn.fetchval("SELECT pg_advisory_unlock($1)", LOCK_KEY, timeout=1.0)
        with contextlib.suppress(Exception):
            conn.terminate()
