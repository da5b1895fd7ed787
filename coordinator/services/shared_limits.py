"""Rate limits and login throttles that several coordinator processes share.

With SQLite there is one coordinator process and the counters in
``services.auth`` live in its memory. With PostgreSQL every replica counts in
the same two tables, so an attacker who spreads attempts over the replicas
behind a load balancer gets no more tries than against one:

- ``SharedRateLimiter``: fixed windows of ``window_s`` per (limiter, key), with
  the previous window's hits weighted by how much of it still lies in the
  sliding window ending now (the usual sliding-window estimate). The increment
  is one conditional upsert, so concurrent hits on any number of replicas never
  let more than the limit through.
- ``SharedLoginThrottle``: the failure count and the last failure per account
  key, with the same growing delays as ``auth.LoginThrottle``.

Keys are stored as their SHA-256 (a login's key holds whatever name was typed),
so rows have a fixed size. Times are wall-clock epoch seconds: replicas need
synchronised clocks, as they do for leases. Finished windows and forgotten
failures are pruned at most once a minute per process.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import State

from coordinator.services.auth import KEPT_FAILURES_BEYOND_FREE
from coordinator.settings import Settings
from coordinator.store import models

PRUNE_EVERY_S = 60.0


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class _Pruner:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = -math.inf

    def due(self) -> bool:
        now = self._clock()
        if now - self._last < PRUNE_EVERY_S:
            return False
        self._last = now
        return True


class SharedRateLimiter:
    """``auth.Limiter`` over the ``rate_hits`` table (PostgreSQL)."""

    def __init__(
        self,
        engine: AsyncEngine,
        name: str,
        limit: int,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine, self.name, self.limit, self.window_s = engine, name, limit, window_s
        self.clock = clock
        self._pruner = _Pruner(time.monotonic)

    async def hit(self, key: str) -> bool:
        now = self.clock()
        window = math.floor(now / self.window_s)
        # The part of the previous window that the sliding window ending now still covers.
        weight = 1.0 - (now / self.window_s - window)
        digest = _digest(key)
        table = models.RateHit
        async with self.engine.begin() as conn:
            previous = await conn.scalar(
                select(table.hits).where(
                    table.limiter == self.name, table.key == digest, table.window == window - 1
                )
            )
            budget = self.limit - math.floor((previous or 0) * weight)
            if budget <= 0:
                return False
            upsert = (
                insert(table)
                .values(limiter=self.name, key=digest, window=window, hits=1)
                .on_conflict_do_update(
                    index_elements=[table.limiter, table.key, table.window],
                    set_={"hits": table.hits + 1},
                    where=table.hits < budget,
                )
                .returning(table.hits)
            )
            counted = await conn.scalar(upsert)
            if self._pruner.due():
                await conn.execute(
                    delete(table).where(table.limiter == self.name, table.window < window - 1)
                )
        return counted is not None


class SharedLoginThrottle:
    """``auth.FailureThrottle`` over the ``login_failures`` table (PostgreSQL), with the
    delays of ``auth.LoginThrottle``."""

    def __init__(
        self,
        engine: AsyncEngine,
        free: int = 5,
        window_s: float = 900.0,
        cap_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.free, self.window_s, self.cap_s = free, window_s, cap_s
        self.clock = clock
        self._pruner = _Pruner(time.monotonic)

    async def wait(self, key: str) -> float:
        now = self.clock()
        table = models.LoginFailure
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(table.failures, table.last_at).where(table.key == _digest(key))
                )
            ).first()
        if row is None or row.last_at <= now - self.window_s or row.failures < self.free:
            return 0.0
        failures, last_at = int(row.failures), float(row.last_at)
        delay = min(self.cap_s, 2.0 ** (failures - self.free))
        return max(0.0, last_at + delay - now)

    async def fail(self, key: str) -> None:
        now = self.clock()
        table = models.LoginFailure
        quiet = table.last_at <= now - self.window_s
        # Forgotten only after a quiet window; the count stops where the delay is capped.
        most = self.free + KEPT_FAILURES_BEYOND_FREE
        upsert = insert(table).values(key=_digest(key), failures=1, last_at=now)
        upsert = upsert.on_conflict_do_update(
            index_elements=[table.key],
            set_={
                "failures": case((quiet, 1), else_=func.least(table.failures + 1, most)),
                "last_at": now,
            },
        )
        async with self.engine.begin() as conn:
            await conn.execute(upsert)
            if self._pruner.due():
                await conn.execute(delete(table).where(table.last_at <= now - self.window_s))

    async def clear(self, key: str) -> None:
        table = models.LoginFailure
        async with self.engine.begin() as conn:
            await conn.execute(delete(table).where(table.key == _digest(key)))


def install(state: State, engine: AsyncEngine, settings: Settings) -> None:
    """Put the shared forms of the app's limits in place of the in-memory ones (the
    same limits and windows as ``create_app`` sets up)."""
    hour = 3600.0
    state.auth_limiter = SharedRateLimiter(engine, "auth", settings.auth_rate_per_minute)
    state.login_throttle = SharedLoginThrottle(engine)
    state.mail_limits = (
        SharedRateLimiter(engine, "mail-ip", settings.mail_per_ip_per_hour, hour),
        SharedRateLimiter(engine, "mail-address", settings.mail_per_address_per_hour, hour),
    )
    state.voucher_limiter = SharedRateLimiter(
        engine, "voucher", settings.voucher_attempts_per_hour, hour
    )
