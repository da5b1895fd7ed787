"""The farm's state and its read-only views: what every part of the farm shares.

The farm is split by concern along one line of classes (each adds a part):
:class:`FarmState` here (the state, views, change notices), then
``queue.FarmQueue`` (users and the waiting jobs), ``leases.FarmLeases``,
``agents.FarmAgents`` and ``engine.Farm`` (start-up and dispatch). Only these
modules change the state; everything else calls the farm's methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

import scheduler
from coordinator.farm.events import EventHub
from coordinator.farm.finals import FinalRows
from coordinator.farm.live import AgentConn, DailyUsage, LiveProgress
from coordinator.meshes.options import MeshRequest
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.db import Reader, Writer
from coordinator.store.keycache import KeyCache
from coordinator.store.modelfiles import ModelFiles, glb_limits
from coordinator.store.storage import BlobStore
from coordinator.store.uploads import UploadMemory

if TYPE_CHECKING:
    from coordinator.farm.cluster import Cluster

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the dispatch latency histogram served on /metrics.
DISPATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FarmState:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        hub: EventHub,
        tiers: dict[str, scheduler.Tier],
        store: BlobStore,
        clock: Callable[[], float] = time.time,
        *,
        tier_of: Callable[[models.User, float], str],
    ) -> None:
        """``tier_of(user, now)``: the user's effective tier (services.entitlement.policy);
        handed in because the rule lives above the farm, with the subscriptions."""
        self.settings = settings
        self.tier_of = tier_of
        self.store = store
        # Downloads: conversions cached, one per (job, format), a few at a time.
        self.models = ModelFiles(store, glb_limits(settings), settings.max_conversions)
        # Small result uploads are received into memory, within this budget (uploads.py).
        self.upload_memory = UploadMemory()
        self.sessions = sessions
        # Hot-path writes (dispatch, running, results, lost leases) go through here.
        self.writer = Writer(sessions.kw["bind"])
        # Point reads of the hot API routes, and the API keys they need (see api_reads).
        self.reader = Reader(sessions.kw["bind"])
        self.keys = KeyCache()
        # make_sessionmaker gives each app a Session class of its own to listen to.
        self.keys.watch(sessions.kw.get("sync_session_class", Session))
        self.hub = hub
        self.tiers = tiers
        self.clock = clock
        # The waiting jobs, per user in dispatch order: kept one job at a time, so a
        # dispatch pass or an estimate reads the lines instead of sorting the queue.
        self._queue = scheduler.QueueIndex()
        self._owners: dict[str, int] = {}  # job id -> user id, for queued and leased jobs
        self._users: dict[str, scheduler.User] = {}
        self._leases: dict[str, scheduler.Lease] = {}
        self._agents: dict[str, AgentConn] = {}
        self._progress: dict[str, LiveProgress] = {}
        # job id -> the mesh options of a job leased here (immutable once submitted), for
        # its result; set with the lease (claim, start-up), dropped with it. A lease taken
        # without them (replica take-over) leaves them to a read of the row.
        self._mesh: dict[str, MeshRequest] = {}
        # Finished jobs' rows (and models) as their commits wrote them, briefly (finals.py):
        # event streams' finished events and the downloads that follow read neither.
        self._final = FinalRows(clock)
        self._fair = scheduler.FairState()
        self._wake = asyncio.Event()
        self.avg_job_s = 30.0
        # Cumulative histogram of dispatch passes that sent work, for /metrics.
        self.dispatch_buckets = [0] * len(DISPATCH_BUCKETS_S)
        self.dispatch_count = 0
        self.dispatch_sum_s = 0.0
        # Agents an admin drained: they stay drained across reconnects until resumed.
        self._drained: set[str] = set()
        # Users whose account is suspended: their agents get no work and are refused.
        self._suspended: set[int] = set()
        # job id -> agents that declined it (their owner's blocklist): never offered again.
        self._declined: dict[str, set[str]] = {}
        self._decline_refunds: dict[str, int] = {}  # job id -> declines that spent no try
        # user id -> submissions in the last day (see services.submission.submit)
        self._usage: dict[int, DailyUsage] = {}
        # user id -> lock held by a submission from its admission check until its jobs
        # are queued (see submitting); gone once nobody holds or awaits it.
        self._submitting: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatching = asyncio.Lock()
        # Bumped whenever anything queue estimates depend on may have changed.
        self._version = 0
        self._positions: tuple[int, float, scheduler.QueueEstimates] | None = None
        # Called with (job id, owner) on every change of a live job (webhooks watch here).
        self._watchers: list[Callable[[str, int | None], None]] = []
        # Replica mode (settings.replicas): the other replicas, the bus, leadership.
        self.cluster: Cluster | None = None
        # Replica mode: run with (kind, id, action) of a control another replica relayed.
        self._controls: list[Callable[[str, str, str], Awaitable[None]]] = []

    def agents_changed(self) -> None:
        """An agent connected, left, or changed what it can take."""
        self.remote_agents_changed()
        if self.cluster is not None:
            self.cluster.touch()

    def remote_agents_changed(self) -> None:
        """An agent here or (replica mode) on another replica changed."""
        self.version_bump()
        self.hub.publish("farm")
        self._wake.set()

    def publish(self, job_id: str, event: str = "changed") -> None:
        """Tell live pages a job changed; ``progress`` means only its live progress did."""
        self.hub.publish(f"job:{job_id}", event)
        owner = self._owners.get(job_id)
        if owner is not None:
            self.hub.publish(f"user:{owner}")
        self.hub.publish("farm")
        if event == "changed":
            for watcher in self._watchers:
                watcher(job_id, owner)
        if self.cluster is not None:
            self.cluster.job_changed(job_id, event, owner)

    def remote_progress(self, job_id: str, live: LiveProgress | None) -> None:
        """Live progress of a job another replica's agent runs (replica mode)."""
        if live is None:
            self._progress.pop(job_id, None)
        else:
            self._progress[job_id] = live

    # -- read-only views of the live state ---------------------------------
    # Everything else reads the farm through these; only the farm changes it.

    @property
    def queue(self) -> Mapping[str, scheduler.Job]:
        return self._queue  # a QueueIndex: read-only through Mapping

    @property
    def users(self) -> Mapping[str, scheduler.User]:
        return MappingProxyType(self._users)

    @property
    def leases(self) -> Mapping[str, scheduler.Lease]:
        return MappingProxyType(self._leases)

    @property
    def agents(self) -> Mapping[str, AgentConn]:
        return MappingProxyType(self._agents)

    @property
    def progress(self) -> Mapping[str, LiveProgress]:
        return MappingProxyType(self._progress)

    @property
    def version(self) -> int:
        """Bumped whenever queue estimates may have changed."""
        return self._version

    def mesh_of(self, job_id: str) -> MeshRequest | None:
        """The mesh options of a job leased here (None: not kept here; read the row)."""
        return self._mesh.get(job_id)

    def owner_of(self, job_id: str) -> int | None:
        """The user whose job waits or runs here (None once it left the farm)."""
        return self._owners.get(job_id)

    def active_owners(self) -> frozenset[int]:
        """Users with a job waiting or leased: the snapshots the scheduler reads."""
        return frozenset(self._owners.values())

    @property
    def drained(self) -> frozenset[str]:
        return frozenset(self._drained)

    @property
    def suspended_owners(self) -> frozenset[int]:
        return frozenset(self._suspended)

    def agents_online(self) -> int:
        """Connected agents that may take work (approved; draining ones still serve);
        replica mode: connected to any replica."""
        if self.cluster is not None:
            return sum(1 for p in self.cluster.everywhere.values() if p.approved)
        return sum(1 for conn in self._agents.values() if conn.approved)

    def agents_with(self, model: str) -> int:
        """Connected, approved agents that hold ``model`` (any replica's, replica mode)."""
        if self.cluster is not None:
            found = self.cluster.everywhere.values()
            return sum(1 for p in found if p.approved and model in p.models)
        return sum(1 for conn in self._agents.values() if conn.approved and model in conn.models)

    def online_elsewhere(self, agent_id: str) -> bool:
        """Replica mode: the agent is connected to another replica."""
        return (
            self.cluster is not None
            and agent_id not in self._agents
            and agent_id in self.cluster.everywhere
        )

    def _available(self, conn: AgentConn) -> bool:
        return conn.idle and conn.id not in self._drained and conn.owner_id not in self._suspended

    @property
    def replicated(self) -> bool:
        """Replica mode: other coordinator processes share this farm's database."""
        return self.cluster is not None

    @property
    def leads(self) -> bool:
        """Whether this process does the farm's once-per-farm work (sweeps): always with
        one process; in replica mode only the leader."""
        return self.cluster is None or self.cluster.leading

    def on_control(self, control: Callable[[str, str, str], Awaitable[None]]) -> None:
        """Call ``control(kind, id, action)`` for each control relayed from another replica."""
        self._controls.append(control)

    @property
    def controls(self) -> tuple[Callable[[str, str, str], Awaitable[None]], ...]:
        return tuple(self._controls)

    def relay(self, kind: str, ident: str, action: str) -> None:
        """Replica mode: run an administrator's control (``kind`` "agent" or "user") on
        the other replicas too (see ``on_control``); nothing with one process."""
        if self.cluster is not None:
            self.cluster.relay(kind, ident, action)

    def nudge(self) -> None:
        """Something a dispatch pass depends on changed (weights, caps, approvals)."""
        self.version_bump()
        self._wake.set()

    def version_bump(self) -> None:
        """Queue estimates may have changed (see ``positions``)."""
        self._version += 1

    def watch(self, watcher: Callable[[str, int | None], None]) -> None:
        """Call ``watcher(job_id, owner)`` on every change of a live job (API webhooks)."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: Callable[[str, int | None], None]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(watcher)

    def observe_duration(self, seconds: float) -> None:
        """Track the typical job time (EWMA) for queue ETAs."""
        if seconds > 0:
            self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * seconds
