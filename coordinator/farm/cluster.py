"""Replica mode: one farm among several coordinator processes on one PostgreSQL.

Each replica keeps its own agents' sockets and leases, and a copy of the queue index
kept current from bus notes (``store.bus``; ids, never state: the receiver reads the
rows). One replica at a time, the leader (``leader.Leadership``), plans with the
unchanged pure scheduler over the agents every replica holds (``agent_presence``),
claims through ``lifecycle.claim`` under its fencing epoch, and notes the holder,
which reads the claimed rows and sends the ``assign``. Heartbeats in ``replicas``
let any replica reap a dead one: its agents' jobs are lost (requeued or failed) by
conditional updates, so each job still ends exactly once. See "Replicas" in
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import scheduler
from coordinator.farm import declines, lifecycle, presence
from coordinator.farm.leader import Leadership
from coordinator.farm.live import LiveProgress
from coordinator.farm.roster import Roster
from coordinator.store.bus import Bus, Note, asyncpg_dsn
from protocol import CloseCode

if TYPE_CHECKING:
    from coordinator.farm.engine import Farm

log = logging.getLogger(__name__)

LEAD_RETRY_S = 1.0
# Jobs whose "claimed"/"settled" this replica has seen, remembered (the newest this many)
# so that a queue refresh that read the row before such a note cannot put it back.
GONE_REMEMBERED = 10_000


def _clean(text: str, limit: int) -> str:
    return text.replace("|", "/")[:limit]


class Cluster(Roster):
    def __init__(self, farm: Farm, bus: Bus) -> None:
        super().__init__(farm, bus.replica)
        self.bus = bus
        self.leadership = Leadership(asyncpg_dsn(farm.settings.db_url), self.replica)
        self.epoch = 0
        # Set once a newly taken lead is ready (epoch raised, fair shares and queue
        # loaded): until then this replica does not plan, so no claim carries an old epoch.
        self._ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._delivering = asyncio.Lock()
        self._gone: OrderedDict[str, int] = OrderedDict()  # job id -> when (a counter)
        self._ticks = itertools.count(1)

    async def publish(self, note: Note) -> None:
        await self.bus.publish(note)

    @property
    def leading(self) -> bool:
        return self.leadership.holding and self._ready

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        now, replica = self.farm.clock(), self.replica
        await self.farm.writer.run(lambda db: presence.join(db, replica, now))
        self.everywhere = await self.farm.writer.run(presence.connected)
        self.farm.keys.on_change(lambda: self.send(Note("user", "", "credentials")))
        self.bus.subscribe(self._received)
        self.bus.on_resync(self.resync)
        await self.bus.start()
        self._tasks = [
            asyncio.create_task(self._pump(), name="bus-outbox"),
            asyncio.create_task(self._presence_loop(), name="presence"),
            asyncio.create_task(self._heartbeat_loop(), name="replica-heartbeat"),
            asyncio.create_task(self._campaign(), name="leadership"),
        ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._spawned]:
            task.cancel()
        for task in [*self._tasks, *self._spawned]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.leadership.resign()
        replica = self.replica
        with contextlib.suppress(Exception):  # stopping anyway; the reaper covers the rest
            await self.farm.writer.run(lambda db: presence.disconnect_all(db, replica))
        await self.bus.close()
        # The row stays: agents that reconnect elsewhere move their presence rows, and
        # the rest are reaped with this replica once its heartbeat is old enough.

    def job_changed(self, job_id: str, event: str, owner: int | None) -> None:
        live = self.farm.progress.get(job_id)
        fields = [event, "" if owner is None else str(owner)]
        if live is not None:
            eta = "" if live.eta_s is None else f"{live.eta_s:.1f}"
            fields += [_clean(live.stage, 40), str(live.step), str(live.total), eta]
        self.send(Note("job", job_id, "|".join(fields)))

    def queued(self, job_id: str) -> None:
        self.send(Note("queue", job_id, "add"))

    def settled(self, job_id: str) -> None:
        self.send(Note("queue", job_id, "settled"))

    def cancel_remote(self, agent_id: str, job_id: str, attempt: int, why: str) -> None:
        self.send(Note("agent", agent_id, f"cancel|{job_id}|{attempt}|{_clean(why, 120)}"))

    def relay(self, kind: str, ident: str, action: str) -> None:
        """An administrator's control, for the replicas that hold what it concerns."""
        if kind in ("agent", "user"):
            self.send(Note(kind, ident, f"control|{_clean(action, 40)}"))  # type: ignore[arg-type]

    # -- the heartbeat and the reaper -----------------------------------------

    async def _heartbeat_loop(self) -> None:
        settings = self.farm.settings
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("replica heartbeat failed")
            await asyncio.sleep(settings.replica_heartbeat_s)  # the heartbeat's period

    async def beat(self) -> None:
        """Say this replica lives, reap dead ones (any replica; idempotent), and (the
        leader) requeue jobs whose agent no replica holds."""
        farm, replica, now = self.farm, self.replica, self.farm.clock()
        settings = farm.settings
        if not await farm.writer.run(lambda db: presence.beat(db, replica, now)):
            log.warning("this replica had been reaped as dead; rejoined")
            self._held.clear()
            self.touch()
        dead_before, tries = now - settings.replica_dead_s, settings.max_attempts
        lost = await farm.writer.run(lambda db: presence.reap(db, dead_before, now, tries))
        if self.leading:
            lost += await farm.writer.run(lambda db: presence.reap_orphans(db, now, tries))
            farm.nudge()  # a pass now and then, should a note have been lost
        for item in lost:
            await self.after_lost(item)
        # Rows of agents that left and whose leases here ended.
        self.touch([a for a in self._held if a not in farm.agents])
        # Claims whose assign note was lost (publishing failed): send them now.
        here = list(farm.agents)
        for agent_id in await farm.writer.run(lambda db: presence.with_claims(db, here)):
            await self.deliver(agent_id)
        self.everywhere = await farm.writer.run(presence.connected)

    async def after_lost(self, lost: presence.Lost) -> None:
        farm = self.farm
        log.info("job %s lost with its replica or agent: now %s", lost.job_id, lost.state)
        farm.drop_lease(lost.job_id)
        if lost.state == scheduler.lifecycle.JobState.QUEUED:
            await self.refresh_queued(lost.job_id)
            self.queued(lost.job_id)
            farm.publish(lost.job_id)
        else:
            farm.settle(lost.job_id)

    # -- leadership and dispatch ----------------------------------------------

    async def _campaign(self) -> None:
        while True:
            if not self.leadership.holding:
                self._ready = False  # lost or resigned: a new lead must get ready again
            was = self.leading
            if await self.leadership.attempt() and not was:
                await self._took_lead()
            await asyncio.sleep(LEAD_RETRY_S)  # the period of the lock's retry

    async def _took_lead(self) -> None:
        replica, now = self.replica, self.farm.clock()
        try:
            self.epoch, fair = await self.farm.writer.run(
                lambda db: presence.lead(db, replica, now)
            )
        except Exception:
            log.exception("could not raise the leader epoch; resigning")
            await self.leadership.resign()
            return
        log.info("replica %s leads (epoch %d)", replica, self.epoch)
        self.farm.resume_fair_shares(fair)  # where the last leader's claims left them
        await self.farm.load_queue()
        self._ready = True
        self.farm.nudge()

    async def dispatch(self) -> int:
        """The leader's pass: plan over every replica's free agents, claim, note holders."""
        farm = self.farm
        if not self.leading or not farm.queue:
            return 0
        started = time.perf_counter()
        # A replica that missed two beats may be dead: plan for its agents no more.
        alive_since = farm.clock() - 2.5 * farm.settings.replica_heartbeat_s
        agents, running = await farm.writer.run(
            lambda db: (presence.free_agents(db, alive_since), presence.running_counts(db))
        )
        if not agents:
            return 0
        farm.set_running(running)
        plan = farm.plan(agents)
        batches = [(a.agent_id, a.job_ids) for a in plan.assignments]
        if not batches:
            return 0
        taken = farm.take_from_queue([i for _, ids in batches for i in ids])
        epoch, fair = self.epoch, plan.state
        try:
            claimed = await farm.writer.run(
                lambda db: presence.fenced_claim(db, epoch, batches, fair)
            )
        except presence.DeposedError as exc:
            log.warning("no longer the leader: %s", exc)
            farm.return_to_queue(taken)
            await self.leadership.resign()
            return 0
        except Exception:
            farm.return_to_queue(taken)
            raise
        sent = 0
        for (agent_id, _), specs in zip(batches, claimed, strict=True):
            for spec in specs:
                self._left_queue(spec.job)
                farm.claimed_elsewhere(spec.job)
                self.send(Note("queue", spec.job, "claimed"))
            if specs:
                self.send(Note("agent", agent_id, "assign"))
                sent += len(specs)
        if sent:
            farm.observe_dispatch(time.perf_counter() - started)
        return sent

    async def deliver(self, agent_id: str) -> None:
        """Send the agent (if its socket is here) the jobs claimed for it."""
        farm = self.farm
        conn = farm.agents.get(agent_id)
        if conn is None:
            return  # the orphan reaper or the new holder's take-over handles them
        async with self._delivering:
            rows = await farm.writer.run(lambda db: lifecycle.assigned_to(db, agent_id))
            # Neither what it holds nor what it just ended (a result, failure or decline
            # whose commit is behind this read: the row still says "claimed").
            fresh = [
                (s, o)
                for s, o in rows
                if not conn.session.is_held(s.job, s.attempt)
                and not conn.session.ended(s.job, s.attempt)
            ]
            if fresh:
                await farm.deliver_claimed(conn, fresh)

    # -- incoming notes -------------------------------------------------------

    def _received(self, note: Note) -> None:
        if note.kind == "agent" and note.action == "assign":
            self._spawn(self.deliver(note.id))
            return
        if note.origin == self.replica:
            return
        if note.kind == "job":
            self._job_note(note)
        elif note.kind == "queue":
            self._queue_note(note)
        elif note.kind in ("agent", "user"):
            self._control_note(note)

    def _job_note(self, note: Note) -> None:
        """A job changed on another replica: its pages here re-render (from the database;
        live progress, which is not stored, comes in the note)."""
        farm = self.farm
        event, owner, *live = note.action.split("|")
        if event not in ("changed", "progress"):
            return
        if note.id not in farm.leases:
            farm.remote_progress(note.id, _progress_of(live))
        farm.hub.publish(f"job:{note.id}", event)
        if owner.isdigit():
            farm.hub.publish(f"user:{owner}")
        farm.hub.publish("farm")

    def _queue_note(self, note: Note) -> None:
        farm = self.farm
        if note.action == "add":
            self._spawn(self.refresh_queued(note.id))
        elif note.action == "claimed":
            self._left_queue(note.id)
            farm.claimed_elsewhere(note.id)
        elif note.action == "settled":
            self._left_queue(note.id)
            farm.forget_job(note.id)

    def _control_note(self, note: Note) -> None:
        farm, action = self.farm, note.action
        if note.kind == "user" and action == "credentials":
            farm.keys.clear()  # a key was revoked, a password changed… on another replica
        elif note.kind == "agent" and action == "attached":
            self._spawn(self._moved(note.id))
            self._spawn(self._reread(note.id))
        elif note.kind == "agent" and action == "changed":
            self._spawn(self._reread(note.id))
        elif note.kind == "agent" and action.startswith("cancel|"):
            _, job_id, attempt, why = [*action.split("|", 3), "", "", ""][:4]
            if note.id in farm.agents and attempt.isdigit():
                self._spawn(farm.stop_attempt(note.id, job_id, int(attempt), why))
        elif action.startswith("control|"):
            for control in farm.controls:
                self._spawn(self._run(control(note.kind, note.id, action.removeprefix("control|"))))

    async def _moved(self, agent_id: str) -> None:
        """The agent connected to another replica: drop our old socket and leases (its
        new holder took them over from the database)."""
        farm = self.farm
        self._held.pop(agent_id, None)
        old = farm.forget_agent(agent_id)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close(CloseCode.REPLACED, "replaced by a newer connection of this agent")

    def _left_queue(self, job_id: str) -> None:
        self._gone[job_id] = next(self._ticks)
        self._gone.move_to_end(job_id)
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)

    async def refresh_queued(self, job_id: str) -> None:
        """A job queued on another replica (a note): put it in line here, unless it was
        claimed or settled while its row was being read (the notes can overtake it)."""
        farm = self.farm
        seen = self._gone.get(job_id)
        row = await farm.writer.run(lambda db: presence.queued_row(db, job_id))
        if row is None:
            return
        refused = await farm.writer.run(lambda db: declines.of_job(db, job_id))
        async with farm.sessions() as db:
            await farm.remember_user(db, row.user_id)
        if self._gone.get(job_id) != seen:
            return
        farm.known_declines(job_id, refused)  # declined on another replica: never again
        farm.enqueue_quietly(row)

    async def resync(self) -> None:
        """Notes may have been lost: rebuild the queue, rewrite presence, deliver again."""
        await self.farm.load_queue()
        self.everywhere = await self.farm.writer.run(presence.connected)
        self.touch()
        for agent_id in list(self.farm.agents):
            await self.deliver(agent_id)
        self.farm.nudge()


def _progress_of(fields: list[str]) -> LiveProgress | None:
    """The live progress in a job note: stage, step, total, ETA (None if it has none)."""
    if len(fields) != 4 or not fields[0]:
        return None
    stage, step, total, eta = fields
    try:
        return LiveProgress(stage, int(step or 0), int(total or 0), float(eta) if eta else None)
    except ValueError:
        return None
