"""The dispatch policy: which queued job (or batch) goes to which agent slot.

Order of service (see docs/scheduling.md):

1. admin-bumped jobs (``priority > 0``), highest priority first;
1b. on an agent whose owner asked for "my own jobs first", the FIFO heads of
   its preferred users (oldest first), while it has room;
2. otherwise the backlogged tier with the smallest stride pass (shares follow
   tier weights, counted in job-steps);
3. inside the tier, the user whose head job has waited ``tier.aging_s`` or
   more, oldest first; else the user with the smallest pass (round-robin,
   weighted by volunteer credit);
4. inside the user, FIFO by ``(-priority, enqueued_at, id)``.

A job no free slot can run is skipped for this call, never charged. A picked
job first joins a batch its own tier opened this call with the same
``batch_key`` (room permitting), else opens a new slot; once slots run out the
walk goes on for joins only, and a user whose head fits no open batch stops
there (no jumping the FIFO). Every job, opener or joiner, is charged.
"""

from __future__ import annotations

import math
from heapq import heapify, heappop, heappush

from scheduler.fairshare import Ledger, user_weight
from scheduler.queue import QueueIndex, UserLine
from scheduler.skips import skip_run
from scheduler.snapshot import (
    Agent,
    Assignment,
    FairState,
    Job,
    Plan,
    Snapshot,
    order_key,
)
from scheduler.tiers import FREE_TIER, Tier


class _UserQueue:
    """One user's jobs in ``order_key`` order; ``pos`` is the first not yet taken.

    ``jobs`` is the user's line in the queue index, read and never changed here.
    """

    __slots__ = ("cap_left", "jobs", "line", "pass_", "pos", "tier", "user_id", "weight")

    def __init__(self, user_id: str, tier: Tier, cap_left: float, weight: float) -> None:
        self.user_id = user_id
        self.tier = tier
        self.cap_left = cap_left
        self.weight = weight
        self.pass_ = 0.0
        self.line = UserLine()
        self.jobs: list[Job] = self.line.jobs
        self.pos = 0


class _TierQueue:
    __slots__ = ("aging", "stride", "tier", "users")

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.users: dict[str, _UserQueue] = {}
        self.stride: list[tuple[float, str]] = []
        self.aging: list[tuple[float, str, str]] = []


class _OpenBatch:
    __slots__ = ("agent", "job_ids")

    def __init__(self, agent: Agent, job_ids: list[str]) -> None:
        self.agent = agent
        self.job_ids = job_ids


class Dispatch:
    """One planning pass (package-internal). ``unlimited`` ignores slots and caps.

    ``plan`` runs it on real free slots; ``queue_positions`` with ``unlimited``
    to get the order jobs would be dispatched in.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        now: float,
        state: FairState | None,
        unlimited: bool,
        fast_skip: bool = True,
    ) -> None:
        self.now = now
        self.unlimited = unlimited
        self.fast_skip = fast_skip
        self.ledger = Ledger(state if state is not None else FairState())
        self.agents = sorted(snapshot.agents, key=lambda a: a.id)
        self.slots = {a.id: (1 if unlimited else max(a.free_slots, 0)) for a in self.agents}
        self.slots_left = sum(self.slots.values())
        self.started_free = [a for a in self.agents if self.slots[a.id] > 0]
        self.candidates: dict[tuple[str, int, frozenset[str]], list[Agent]] = {}
        # job.needs -> whether any agent that had a free slot at the start can run it
        self.runnable: dict[tuple[str, int, frozenset[str]], bool] = {}
        self.assigned: set[str] = set()
        self.order: list[Job] = []
        # Runs of jobs skipped for this call: (a user's line, first, end)
        self.skipped_runs: list[tuple[UserLine, int, int]] = []
        self.batches: list[_OpenBatch] = []
        # (tier, batch key) -> batches with that key opened by that tier
        self.open: dict[tuple[str, str], list[_OpenBatch]] = {}
        self.room = 0  # free places left in open batches
        self.bumped: list[Job] = []
        self.users: dict[str, _UserQueue] = {}
        self.tiers: dict[str, _TierQueue] = {}
        self._load(snapshot)

    def _load(self, snapshot: Snapshot) -> None:
        # Each user's line comes sorted from the queue index (kept up to date by
        # its owner, or built here from a plain job list): no pass over every job.
        jobs = snapshot.jobs
        index = jobs if isinstance(jobs, QueueIndex) else QueueIndex(jobs)
        lines = index.lines
        for user_id in sorted(lines):
            uq = self._user_queue(snapshot, user_id)
            if uq is None:
                continue
            line = uq.line = lines[user_id]
            uq.jobs = line.jobs
            if uq.cap_left > 0 and all(map(self._never_runs_needs, line.groups)):
                # Nothing here can run in this call: every pick of this user would
                # skip (uncharged), and it could join no batch. Skipped up front.
                self.skipped_runs.append((line, 0, len(line)))
                uq.pos = len(line)
            elif uq.cap_left > 0:
                self._activate(uq)
        self.bumped = [job for job in index.bumped() if job.user_id in self.users]

    def _user_queue(self, snapshot: Snapshot, user_id: str) -> _UserQueue | None:
        user = snapshot.users.get(user_id)
        if user is None:
            return None
        tier = snapshot.tiers.get(user.tier) or snapshot.tiers.get(FREE_TIER)
        if tier is None:
            return None
        cap = math.inf if self.unlimited else float(tier.max_concurrent - user.running)
        uq = _UserQueue(user_id, tier, cap, user_weight(user.credit))
        uq.pass_ = self.ledger.user_start(tier.name, user_id)
        self.users[user_id] = uq
        if tier.name not in self.tiers:
            self.tiers[tier.name] = _TierQueue(tier)
        return uq

    # -- queues ---------------------------------------------------------------

    def _unplaced_from(self, uq: _UserQueue, pos: int) -> int:
        """The first position at or after ``pos`` in the user's line whose job is not
        placed yet (bumped jobs are placed before the loop, wherever they sit)."""
        jobs, assigned = uq.jobs, self.assigned
        while pos < len(jobs) and jobs[pos].id in assigned:
            pos += 1
        return pos

    def _head(self, uq: _UserQueue) -> Job | None:
        uq.pos = pos = self._unplaced_from(uq, uq.pos)
        return uq.jobs[pos] if pos < len(uq.jobs) else None

    def _activate(self, uq: _UserQueue) -> None:
        """(Re)index a user in its tier after its head or pass changed, or drop it."""
        tq = self.tiers[uq.tier.name]
        head = self._head(uq)
        if head is None or uq.cap_left <= 0:
            tq.users.pop(uq.user_id, None)
            return
        tq.users[uq.user_id] = uq
        heappush(tq.stride, (uq.pass_, uq.user_id))
        heappush(tq.aging, (head.enqueued_at, head.id, uq.user_id))

    def _pick(self, tq: _TierQueue) -> tuple[_UserQueue, bool]:
        """The next user of a tier, and whether it was picked for an aged head."""
        aging = tq.aging
        while aging:
            enqueued_at, job_id, user_id = aging[0]
            uq = tq.users.get(user_id)
            head = self._head(uq) if uq is not None else None
            if uq is None or head is None or head.id != job_id:
                heappop(aging)
                continue
            if self.now - enqueued_at >= tq.tier.aging_s:
                return uq, True
            break
        stride = tq.stride
        while True:
            pass_, user_id = stride[0]
            uq = tq.users.get(user_id)
            if uq is None or uq.pass_ != pass_:
                heappop(stride)
                continue
            return uq, False

    def _never_runs(self, job: Job) -> bool:
        """No agent that had a free slot at the start (any agent, if unlimited) can run it.

        Such a job can neither open a slot nor join a batch (batches are opened
        only on agents that had free slots).
        """
        return self._never_runs_needs(job.needs)

    def _never_runs_needs(self, needs: tuple[str, int, frozenset[str]]) -> bool:
        runnable = self.runnable.get(needs)
        if runnable is None:
            model, steps, excluded = needs
            runnable = self.runnable[needs] = any(
                model in a.models and steps <= a.max_steps and a.id not in excluded
                for a in self.started_free
            )
        return not runnable

    def _skip_run(self, uq: _UserQueue, aged: bool) -> None:
        """After a skip, skip the next jobs that can never run in this call (``skips``)."""
        skip_run(self, uq, aged)

    @property
    def skipped(self) -> list[Job]:
        """The jobs skipped for this call (uncharged: nothing free could run them)."""
        return [job for line, pos, end in self.skipped_runs for job in line.jobs[pos:end]]

    # -- placement ------------------------------------------------------------

    def _agent_for(self, job: Job) -> Agent | None:
        """Best fit: the smallest capable agent with a free slot (ties by id)."""
        key = job.needs
        cands = self.candidates.get(key)
        if cands is None:
            capable = [a for a in self.agents if a.can_run(job) and self.slots[a.id] > 0]
            capable.sort(key=lambda a: (a.max_steps, len(a.models), a.id), reverse=True)
            cands = self.candidates[key] = capable
        if self.unlimited:
            return cands[-1] if cands else None
        while cands and self.slots[cands[-1].id] <= 0:
            cands.pop()
        return cands[-1] if cands else None

    def _charge(self, job: Job, *, by_tier: bool, by_user: bool) -> None:
        uq = self.users[job.user_id]
        self.assigned.add(job.id)
        self.order.append(job)
        uq.cap_left -= 1
        uq.pass_ = self.ledger.charge(
            uq.tier.name,
            uq.user_id,
            job.steps,
            uq.tier.weight,
            uq.weight,
            by_tier_pass=by_tier,
            by_user_pass=by_user,
        )
        self._activate(uq)

    def _place(self, job: Job, *, by_tier: bool, by_user: bool) -> bool:
        """Join an open batch of the same key if one has room, else open a new slot.

        Only batches opened by the job's own tier take it: a tier's service then
        comes only from its own fair turns, so batching cannot skew tier shares.
        """
        key = (self.users[job.user_id].tier.name, job.batch_key)
        if not self.unlimited:
            for batch in self.open.get(key, ()):
                if len(batch.job_ids) < batch.agent.max_batch and batch.agent.can_run(job):
                    self._charge(job, by_tier=by_tier, by_user=by_user)
                    batch.job_ids.append(job.id)
                    self.room -= 1
                    return True
            if self.slots_left <= 0:
                return False
        agent = self._agent_for(job)
        if agent is None:
            return False
        self._charge(job, by_tier=by_tier, by_user=by_user)
        if self.unlimited:
            return True
        self.slots[agent.id] -= 1
        self.slots_left -= 1
        batch = _OpenBatch(agent, [job.id])
        self.batches.append(batch)
        if agent.max_batch > 1:
            self.open.setdefault(key, []).append(batch)
            self.room += agent.max_batch - 1
        return True

    def _place_on(self, agent: Agent, job: Job) -> bool:
        """Put ``job`` on ``agent``: into its open batch of the same key, else a new slot."""
        key = (self.users[job.user_id].tier.name, job.batch_key)
        for batch in self.open.get(key, ()):
            if batch.agent is agent and len(batch.job_ids) < agent.max_batch:
                self._charge(job, by_tier=True, by_user=True)
                batch.job_ids.append(job.id)
                self.room -= 1
                return True
        if self.slots[agent.id] <= 0:
            return False
        self._charge(job, by_tier=True, by_user=True)
        self.slots[agent.id] -= 1
        self.slots_left -= 1
        batch = _OpenBatch(agent, [job.id])
        self.batches.append(batch)
        if agent.max_batch > 1:
            self.open.setdefault(key, []).append(batch)
            self.room += agent.max_batch - 1
        return True

    def _preferred(self) -> None:
        """ "My own jobs first": an agent's preferred users' heads go to it before fair share.

        Each preferred user's FIFO head (never a later job: no jumping the
        user's own line) that the agent can run and whose owner is under the
        tier's concurrency cap, oldest first across those users, fills the
        agent's free slots and batches. They are charged like any other
        dispatch, so fair share sees the service they got.
        """
        for agent in self.agents:
            if not agent.preferred_users or self.slots[agent.id] <= 0:
                continue
            while True:
                heads = []
                for user_id in sorted(agent.preferred_users):
                    uq = self.users.get(user_id)
                    head = self._head(uq) if uq is not None and uq.cap_left > 0 else None
                    if head is not None and agent.can_run(head):
                        heads.append(head)
                if not any(self._place_on(agent, job) for job in sorted(heads, key=order_key)):
                    break

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        for job in sorted(self.bumped, key=order_key):
            uq = self.users[job.user_id]
            if job.id not in self.assigned and uq.cap_left > 0:
                self._place(job, by_tier=False, by_user=False)
        if not self.unlimited:
            self._preferred()
        ledger = self.ledger
        heap = [(ledger.tier_start(n), -tq.tier.weight, n) for n, tq in self.tiers.items()]
        heapify(heap)
        while heap and (self.unlimited or self.slots_left > 0 or self.room > 0):
            pass_, neg_weight, name = heappop(heap)
            tq = self.tiers[name]
            if not tq.users:
                continue
            current = ledger.tier_start(name)
            if current != pass_:
                heappush(heap, (current, neg_weight, name))
                continue
            uq, aged = self._pick(tq)
            head = self._head(uq)
            assert head is not None  # _activate keeps only users with a head
            # Once slots are gone only joins remain; tiers whose heads fit no open
            # batch sit out, so these picks must not advance virtual time.
            fair = self.unlimited or self.slots_left > 0
            if not self._place(head, by_tier=fair, by_user=fair and not aged):
                self._unplaced(uq, head, aged)
            if tq.users:
                heappush(heap, (ledger.tier_start(name), neg_weight, name))

    def _unplaced(self, uq: _UserQueue, head: Job, aged: bool) -> None:
        """The user's head fits nowhere now: skip it for this call, or stop serving the user."""
        if self.unlimited or self.slots_left > 0:
            # Nothing free can run it now: skip it for this call, uncharged.
            self.skipped_runs.append((uq.line, uq.pos, uq.pos + 1))
            uq.pos += 1
            if self.fast_skip:
                self._skip_run(uq, aged)
        else:
            # Slots are gone and its head fits no open batch: done for this call
            # (later jobs do not jump the head just to ride along).
            uq.cap_left = 0
        self._activate(uq)


def plan(snapshot: Snapshot, now: float, state: FairState | None = None) -> Plan:
    """Assign queued jobs to free agent slots; pure and deterministic.

    The result does not depend on the order of ``snapshot.jobs`` or
    ``snapshot.agents``. Store ``Plan.state`` and pass it to the next call.
    """
    dispatch = Dispatch(snapshot, now, state, unlimited=False)
    dispatch.run()
    assignments = tuple(Assignment(b.agent.id, tuple(b.job_ids)) for b in dispatch.batches)
    return Plan(assignments, dispatch.ledger.freeze())
