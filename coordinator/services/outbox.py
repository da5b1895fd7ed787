"""Work kept in a database table until it is done, whatever happens to the process.

A job's end writes a row in the transaction that ends the job
(``coordinator.farm.lifecycle``); a :class:`Pump` in every coordinator process claims
rows that are due, up to its free slots, and runs a handler for each in a task of its
own. A claim is a lease (``claim``, ``claimed_until``): another process takes a row
over once it has run out (the one that held it stopped or died), and the statements
that finish a row match only the claim that took it, so a late answer of the first
changes nothing. Without replica mode every claim was this process's before it
stopped, so they are all released at start-up. Work is done at least once: a row
whose work was cut off by a crash is done again.

An outbox table has ``id``, ``attempts``, ``next_at``, ``claim`` and
``claimed_until`` columns (besides what its work needs). Used by webhook deliveries
(``coordinator.services.api_webhooks``) and the finished-job mail
(``coordinator.services.job_mail``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Delete,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    func,
    select,
    update,
)

from coordinator.farm.engine import Farm

log = logging.getLogger(__name__)

POLL_S = 10.0  # the table is looked at this often when nothing in this process woke it
# Due work held back (e.g. its key has an attempt in flight elsewhere): look again soon.
HELD_BACK_RETRY_S = 1.0


@dataclass(frozen=True)
class Statements:
    """The statements every outbox table needs, built once."""

    take: Update  # fenced: a row claimed by another process meanwhile is not matched
    next_due: Select[Any]  # when the next unclaimed row is due
    done: Delete  # the claim's work is over: the row goes
    later: Update  # not done: try again at ``b_next_at``, unclaimed
    release_all: Update

    @classmethod
    def of(cls, table: Table) -> Statements:
        c = table.c
        mine = (c.id == bindparam("b_id"), c.claim == bindparam("b_claim"))
        return cls(
            take=update(table)
            .where(c.id == bindparam("b_id"), c.claimed_until <= bindparam("b_now"))
            .values(claim=bindparam("b_claim"), claimed_until=bindparam("b_until")),
            # The earliest unclaimed row (the next_at index, not a scan). Rows in hand here
            # wake the pump when done; another process's claims are looked at by the poll.
            next_due=select(func.min(c.next_at)).where(c.claim.is_(None)),
            done=delete(table).where(*mine),
            later=update(table)
            .where(*mine)
            .values(
                attempts=bindparam("b_attempts"),
                next_at=bindparam("b_next_at"),
                claim=None,
                claimed_until=0.0,
            ),
            release_all=update(table)
            .where(c.claim.is_not(None))
            .values(claim=None, claimed_until=0.0),
        )


def mine(row: int, claim: str) -> dict[str, Any]:
    """The parameters of ``done`` and ``later`` for a row this process claimed."""
    return {"b_id": row, "b_claim": claim}


def claim_due(
    db: Connection,
    due: Select[Any],
    statements: Statements,
    now: float,
    claim: str,
    limit: int,
    lease_s: float,
) -> tuple[list[Any], float | None]:
    """Up to ``limit`` rows of ``due`` (parameters ``b_now``, ``b_limit``) claimed as
    ``claim`` until ``now + lease_s``; and when the next row can be claimed."""
    taken: list[Any] = []
    if limit > 0:
        for row in db.execute(due, {"b_now": now, "b_limit": limit}).all():
            params = {"b_id": row.id, "b_now": now, "b_claim": claim, "b_until": now + lease_s}
            if db.execute(statements.take, params).rowcount:
                taken.append(row)
    next_due = db.execute(statements.next_due).scalar()
    return taken, None if next_due is None else float(next_due)


Handler = Callable[[Any, str], Awaitable[None]]


class Pump:
    """Claims due rows for this process, up to ``slots`` in hand at once, and runs
    ``handle(row, claim)`` for each; sleeps until the next row is due, :meth:`wake`, a
    slot frees, or :data:`POLL_S` has passed."""

    def __init__(
        self,
        farm: Farm,
        name: str,
        due: Select[Any],
        statements: Statements,
        handle: Handler,
        slots: int,
        lease_s: float,
    ) -> None:
        self.farm = farm
        self.name = name
        self.due = due
        self.statements = statements
        self.handle = handle
        self.slots = slots
        self.lease_s = lease_s
        self.poll_s = POLL_S
        self.held_back_retry_s = HELD_BACK_RETRY_S
        self.working: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.farm.replicated:
            await self.farm.writer.run(lambda db: db.execute(self.statements.release_all))
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop claiming and cancel the work in hand; its rows stay for the next start."""
        tasks = [*self.working, *([self._task] if self._task else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """New work may be due (this process wrote it, or a slot freed)."""
        self._wake.set()

    async def drop(self, row: int, claim: str) -> None:
        """The row's work is over (done, or given up): it goes, if still this claim's."""
        await self.farm.writer.run(lambda db: db.execute(self.statements.done, mine(row, claim)))

    async def again(self, row: int, claim: str, attempts: int, delay_s: float) -> None:
        """Not done after ``attempts``: unclaimed, due again in ``delay_s``."""
        params = {
            **mine(row, claim),
            "b_attempts": attempts,
            "b_next_at": self.farm.clock() + delay_s,
        }
        await self.farm.writer.run(lambda db: db.execute(self.statements.later, params))

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self.slots - len(self.working)
            if free <= 0:
                await self._wake.wait()  # until some work in hand is done
                continue
            rows: list[Any] = []
            due: float | None = None
            claim = secrets.token_hex(8)
            now = self.farm.clock()
            unit = functools.partial(
                claim_due, due=self.due, statements=self.statements, now=now, claim=claim,
                limit=free, lease_s=self.lease_s,
            )  # fmt: skip
            try:
                rows, due = await self.farm.writer.run(unit)
            except Exception:
                log.exception("%s: could not claim work", self.name)
            for row in rows:
                task = asyncio.create_task(self._handle(row, claim), name=self.name)
                self.working.add(task)
                task.add_done_callback(self._done)
            least = 0.0 if rows else self.held_back_retry_s
            wait = (
                self.poll_s
                if due is None
                else min(max(due - self.farm.clock(), least), self.poll_s)
            )
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _handle(self, row: Any, claim: str) -> None:
        try:
            await self.handle(row, claim)
        except Exception:  # the row's claim runs out and it is done again later
            log.exception("%s: work on row %s failed", self.name, row.id)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.working.discard(task)
        self._wake.set()
