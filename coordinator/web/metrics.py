"""``/metrics`` in the Prometheus text format.

Who may scrape: a logged-in admin, a request with an admin's API key
(``Authorization: Bearer sfk.…``), or a direct connection from the loopback
interface that carries no proxy forwarding header. A request that came
through nginx on the same host has ``X-Forwarded-For`` set and is refused
unless it authenticates, so the public cannot read the farm's internals.
The numbers are aggregates only (per tier, per state); no user is named.

Each app has its own :class:`CollectorRegistry` (tests build many apps); its
one collector reports a sample gathered just before rendering. The text is
served as format 0.0.4, which every Prometheus version reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.farm.engine import DISPATCH_BUCKETS_S, Farm
from coordinator.request_context import farm_of
from coordinator.services import apikeys
from coordinator.store import models
from coordinator.web import stats
from coordinator.web.base import current_user

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


@dataclass(frozen=True)
class Sample:
    queue_by_tier: dict[str, int]
    jobs_by_state: dict[str, int]
    agents: dict[str, int]
    leases: int
    results: int
    result_bytes: int
    gpu_seconds: float
    dispatch_buckets: tuple[int, ...]
    dispatch_count: int
    dispatch_sum_s: float
    upload_memory_bytes: int  # held by result uploads being received (store/uploads.py)
    # Work waiting in the outboxes (services/outbox.py): kind -> (rows, oldest row's age).
    outbox: dict[str, tuple[int, float]]


async def gather(farm: Farm, db: AsyncSession) -> Sample:
    results, size = (
        await db.execute(select(func.count(), func.coalesce(func.sum(models.Result.glb_size), 0)))
    ).one()
    gpu = await db.scalar(select(func.coalesce(func.sum(models.Agent.gpu_seconds), 0.0)))
    agents = {"approved": 0, "pending": 0, "draining": 0, "paused": 0}
    for conn in farm.agents.values():
        status = farm.conn_status(conn)
        if status in agents:  # a suspended owner's agents are leaving the farm
            agents[status] += 1
    return Sample(
        queue_by_tier=stats.queue_by_tier(farm),
        jobs_by_state=await stats.jobs_by_state(db),
        agents=agents,
        leases=len(farm.leases),
        results=int(results or 0),
        result_bytes=int(size or 0),
        gpu_seconds=float(gpu or 0.0),
        dispatch_buckets=tuple(farm.dispatch_buckets),
        dispatch_count=farm.dispatch_count,
        dispatch_sum_s=farm.dispatch_sum_s,
        upload_memory_bytes=farm.upload_memory.used,
        outbox={
            "webhook": await _waiting(db, models.WebhookOutbox, farm.clock()),
            "job_mail": await _waiting(db, models.JobMailOutbox, farm.clock()),
        },
    )


async def _waiting(
    db: AsyncSession, table: type[models.WebhookOutbox | models.JobMailOutbox], now: float
) -> tuple[int, float]:
    count, oldest = (await db.execute(select(func.count(), func.min(table.created_at)))).one()
    return int(count or 0), max(now - oldest, 0.0) if oldest is not None else 0.0


class FarmCollector(Collector):
    def __init__(self) -> None:
        self.sample: Sample | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.sample
        if s is None:
            return
        queue = GaugeMetricFamily(
            "shapefarm_queue_depth", "Jobs waiting for an agent, per tier", labels=["tier"]
        )
        for tier, count in s.queue_by_tier.items():
            queue.add_metric([tier], count)
        yield queue
        jobs = GaugeMetricFamily(
            "shapefarm_jobs", "Jobs in the database by state", labels=["state"]
        )
        for state, count in s.jobs_by_state.items():
            jobs.add_metric([state], count)
        yield jobs
        agents = GaugeMetricFamily(
            "shapefarm_agents_online", "Connected agents by status", labels=["status"]
        )
        for status, count in s.agents.items():
            agents.add_metric([status], count)
        yield agents
        yield GaugeMetricFamily("shapefarm_leases", "Jobs assigned to agents now", value=s.leases)
        yield GaugeMetricFamily(
            "shapefarm_results_stored", "Stored models (results)", value=s.results
        )
        yield GaugeMetricFamily(
            "shapefarm_result_bytes_stored", "Bytes of stored GLB models", value=s.result_bytes
        )
        yield GaugeMetricFamily(
            "shapefarm_gpu_seconds_served", "GPU seconds reported by agents", value=s.gpu_seconds
        )
        yield GaugeMetricFamily(
            "shapefarm_upload_memory_bytes",
            "Bytes of result uploads held in memory while they are received (bounded)",
            value=s.upload_memory_bytes,
        )
        waiting = GaugeMetricFamily(
            "shapefarm_outbox_rows",
            "Work kept until done: webhook deliveries and job ends, finished-job mails",
            labels=["kind"],
        )
        age = GaugeMetricFamily(
            "shapefarm_outbox_oldest_seconds",
            "Age of the oldest row waiting in each outbox (0: none waits)",
            labels=["kind"],
        )
        for kind, (rows, oldest_s) in s.outbox.items():
            waiting.add_metric([kind], rows)
            age.add_metric([kind], oldest_s)
        yield waiting
        yield age
        bounds = [f"{bound:g}" for bound in DISPATCH_BUCKETS_S] + ["+Inf"]
        yield HistogramMetricFamily(
            "shapefarm_dispatch_latency_seconds",
            "Time of dispatch passes that assigned work",
            buckets=list(zip(bounds, [*s.dispatch_buckets, s.dispatch_count], strict=True)),
            sum_value=s.dispatch_sum_s,
        )


def _registry(request: Request) -> tuple[CollectorRegistry, FarmCollector]:
    state = request.app.state
    if not hasattr(state, "metrics"):
        registry = CollectorRegistry(auto_describe=False)
        collector = FarmCollector()
        registry.register(collector)
        state.metrics = (registry, collector)
    metrics: tuple[CollectorRegistry, FarmCollector] = state.metrics  # app.state is untyped
    return metrics


def _direct_local(request: Request) -> bool:
    host = request.client.host if request.client else ""
    return host in LOOPBACK and not any(h in request.headers for h in FORWARDING_HEADERS)


async def may_scrape(request: Request, farm: Farm, db: AsyncSession) -> bool:
    if _direct_local(request):
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        user = await apikeys.authenticate(db, token.strip(), farm.clock())
        return user is not None and user.is_admin
    user = await current_user(request, db)
    return user is not None and user.is_admin


async def metrics(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        if not await may_scrape(request, farm, db):
            raise HTTPException(
                403, "Metrics are served to localhost, admins, or with an admin's API key."
            )
        sample = await gather(farm, db)
    registry, collector = _registry(request)
    collector.sample = sample  # no await between here and rendering: no other scrape interleaves
    body = generate_latest(registry)
    return Response(
        body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"}
    )


ROUTES = [Route("/metrics", metrics)]
