"""Webhooks per API key and per job: a signed POST when a job submitted with the key ends.

The body is JSON (``{"event": "job.finished", "sent_at", "job": {...}}``; the test
button sends ``"event": "ping"``). Each request carries ``Shapefarm-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed by the key's webhook
secret>``, ``Shapefarm-Event`` and ``Shapefarm-Delivery`` (an id, the same on every
retry); receivers should check the HMAC and refuse old timestamps (replays). A job
submitted with its own ``webhook_url`` (``coordinator.services.job_webhooks``) is sent
there too, signed the same way with the same key's secret (once when both URLs are
the same).

Bounded: deliveries wait in one queue of :data:`QUEUE_SIZE` (more are dropped and
counted), :data:`WORKERS` send at a time, each attempt has :data:`TIMEOUT_S`, a
failed attempt (no answer, or not 2xx) is tried again after 1, 2, 4, 8 s
(:data:`ATTEMPTS` in all) without holding a worker, redirects are not followed and
answers are not read. One key has at most :data:`PENDING_PER_KEY` deliveries waiting
(queued or between attempts); more are logged as dropped, so that one user's slow
receivers cannot hold everyone's. The log keeps the last :data:`LOG_KEEP` deliveries
per key.

Server-side request forgery: see ``coordinator.services.outbound`` (public addresses
only unless ``webhooks_allow_private``; the request goes to the checked address).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Table, bindparam, delete, insert, select

from coordinator.farm.engine import Farm
from coordinator.services.api_reads import read_job
from coordinator.services.job_webhooks import PerJob
from coordinator.services.jobs import result_json
from coordinator.services.outbound import WebhookError, resolve
from coordinator.store import models

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
WORKERS = 4
ATTEMPTS = 5
BACKOFF_S = 1.0
TIMEOUT_S = 5.0
LOG_KEEP = 50
PENDING_PER_KEY = 100
TEST_INTERVAL_S = 2.0  # the "send test" button, per key
EVENT_FINISHED, EVENT_TEST = "job.finished", "ping"

_KEYS = cast(Table, models.ApiKey.__table__)
_LOG = cast(Table, models.WebhookDelivery.__table__)
_HOOK = select(_KEYS.c.webhook_url, _KEYS.c.webhook_secret).where(
    _KEYS.c.id == bindparam("b_key_id")
)
_ADD_LOG = insert(_LOG)
_PRUNE_LOG = delete(_LOG).where(
    _LOG.c.api_key_id == bindparam("b_key_id"),
    _LOG.c.id.not_in(
        select(_LOG.c.id)
        .where(_LOG.c.api_key_id == bindparam("b_key_id"))
        .order_by(_LOG.c.id.desc())
        .limit(LOG_KEEP)
        .scalar_subquery()
    ),
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def job_payload(job: models.Job, result: models.Result | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.id,
        "state": job.state,
        "error": job.error,
        "prompt": job.prompt,
        "seed": job.seed,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "url": f"/api/v1/jobs/{job.id}",
    }
    if result is not None:
        data["result"] = result_json(job.id, result)
    return data


@dataclass
class Delivery:
    key_id: str
    url: str
    secret: str
    event: str
    job_id: str | None
    body: bytes
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    attempts: int = 0
    max_attempts: int = ATTEMPTS
    started: float = field(default_factory=time.monotonic)
    per_job: bool = False  # to the job's own URL, not the key's


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Webhooks:
    """The delivery engine of one app: a bounded queue, a few workers, timed retries."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.allow_private = farm.settings.webhooks_allow_private
        self.backoff_s = BACKOFF_S
        self.timeout_s = TIMEOUT_S
        self.queue: asyncio.Queue[Delivery | str] = asyncio.Queue(QUEUE_SIZE)
        self.users: set[int] = set()  # users with a webhook on some key
        self.per_job = PerJob(farm)
        self.pending: Counter[str] = Counter()  # key id -> deliveries not yet logged
        self.dropped = 0
        self.logged = 0  # deliveries finished and written to the log (tests, metrics)
        self._logged = asyncio.Condition()
        self._tests: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        async with self.farm.sessions() as db:
            self.users = set(
                await db.scalars(
                    select(models.ApiKey.user_id).where(models.ApiKey.webhook_url.is_not(None))
                )
            )
        await self.per_job.load()
        self._client = httpx.AsyncClient(
            follow_redirects=False, timeout=self.timeout_s, trust_env=False
        )
        self._tasks = [
            asyncio.create_task(self._work(), name=f"webhooks-{i}") for i in range(WORKERS)
        ]
        self.farm.watch(self._job_changed)

    async def stop(self) -> None:
        self.farm.unwatch(self._job_changed)
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    # -- what to send -----------------------------------------------------

    def _job_changed(self, job_id: str, owner: int | None) -> None:
        """Farm hook, on every change of a job while it is live."""
        watched = owner in self.users or self.per_job.watches(job_id, owner)
        if watched and self.farm.owner_of(job_id) is not None:
            # The farm forgets a job right after announcing its end: look once it has.
            asyncio.get_running_loop().call_soon(self._ended, job_id)

    def _ended(self, job_id: str) -> None:
        if self.farm.owner_of(job_id) is None:
            self.per_job.ended(job_id)
            self._put(job_id)

    def _put(self, item: Delivery | str) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook queue full (%d): a delivery was dropped", QUEUE_SIZE)
            if isinstance(item, Delivery):
                self._release(item)

    def _release(self, delivery: Delivery) -> None:
        """A job's delivery is done (logged or dropped): its key may have another waiting."""
        if delivery.event == EVENT_FINISHED:
            self.pending[delivery.key_id] -= 1
            if self.pending[delivery.key_id] <= 0:
                del self.pending[delivery.key_id]

    async def _deliveries_for(self, job_id: str) -> list[Delivery]:
        """The key's delivery and the job's own, for a job that ended (the same URL: one)."""

        def unit(db: Connection) -> tuple[Any, Any] | None:
            found = read_job(db, job_id)
            if found is None or found[0].api_key_id is None:
                return None
            hook = db.execute(_HOOK, {"b_key_id": found[0].api_key_id}).first()
            return (found, hook) if hook is not None else None

        loaded = await self.farm.reader.run(unit)
        if loaded is None:  # gone, or not submitted with a key, or the key was revoked
            return []
        (job, result), (key_url, secret) = loaded
        if job.state not in ("succeeded", "failed", "cancelled") or not secret:
            return []
        urls = [(url, False) for url in (key_url,) if url]
        if job.webhook_url and job.webhook_url != key_url:
            urls.append((job.webhook_url, True))
        body = self._body(EVENT_FINISHED, {"job": job_payload(job, result)})
        key_id = str(job.api_key_id)
        return [
            Delivery(key_id, url, secret, EVENT_FINISHED, job.id, body, per_job=per_job)
            for url, per_job in urls
        ]

    def _body(self, event: str, extra: dict[str, Any]) -> bytes:
        return json.dumps({"event": event, "sent_at": self.farm.clock(), **extra}).encode()

    # -- sending ----------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if not isinstance(item, str):
                    await self._attempt(item)  # a retry
                    continue
                for delivery in await self._deliveries_for(item):
                    if self.pending[delivery.key_id] >= PENDING_PER_KEY:
                        error = f"dropped: {PENDING_PER_KEY} deliveries of this key were waiting"
                        await self._log(delivery, Outcome(None, error), counted=False)
                        continue
                    self.pending[delivery.key_id] += 1
                    await self._attempt(delivery)
            except Exception:
                log.exception("webhook delivery failed")

    async def _attempt(self, delivery: Delivery) -> Outcome:
        delivery.attempts += 1
        outcome = await self.post(delivery)
        if outcome.ok or delivery.attempts >= delivery.max_attempts:
            await self._log(delivery, outcome)
            return outcome
        delay = self.backoff_s * 2 ** (delivery.attempts - 1)
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def again() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._put(delivery)

        timer = loop.call_later(delay, again)
        self._timers.add(timer)
        return outcome

    async def post(self, delivery: Delivery) -> Outcome:
        """One attempt: resolve and check the host, POST the signed body, read the status."""
        assert self._client is not None, "start() first"
        try:
            parts = urlsplit(delivery.url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await resolve(host, port, self.allow_private)
        except (WebhookError, ValueError) as exc:
            return Outcome(None, str(exc))
        url = httpx.URL(delivery.url).copy_with(host=address)
        timestamp = int(self.farm.clock())
        headers = {
            "Host": parts.netloc.rpartition("@")[2],
            "Content-Type": "application/json",
            "User-Agent": "shapefarm-webhooks",
            "Shapefarm-Event": delivery.event,
            "Shapefarm-Delivery": delivery.id,
            "Shapefarm-Signature": sign(delivery.secret, timestamp, delivery.body),
        }
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            request = self._client.build_request(
                "POST", url, content=delivery.body, headers=headers, extensions=extensions
            )
            response = await self._client.send(request, stream=True)
            await response.aclose()  # the answer's body is not ours to read
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:300])
        error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return Outcome(response.status_code, error)

    async def _log(self, delivery: Delivery, outcome: Outcome, counted: bool = True) -> None:
        if counted:
            self._release(delivery)
        row = {
            "api_key_id": delivery.key_id,
            "job_id": delivery.job_id,
            "event": delivery.event,
            "url": delivery.url,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "attempts": delivery.attempts,
            "at": self.farm.clock(),
            "duration_ms": (time.monotonic() - delivery.started) * 1000,
            "per_job": delivery.per_job,
        }

        def unit(db: Connection) -> None:
            # The key may have been revoked meanwhile: then there is no log to keep.
            if db.execute(select(_KEYS.c.id).where(_KEYS.c.id == delivery.key_id)).first():
                db.execute(_ADD_LOG, row)
                db.execute(_PRUNE_LOG, {"b_key_id": delivery.key_id})

        await self.farm.writer.run(unit)
        async with self._logged:
            self.logged += 1
            self._logged.notify_all()

    async def wait_logged(self, count: int) -> None:
        """Until ``count`` deliveries have been logged in all (bound it with a timeout)."""
        async with self._logged:
            await self._logged.wait_for(lambda: self.logged >= count)

    async def send_test(self, key: models.ApiKey) -> Outcome:
        """The profile's "send test" button: one attempt now, logged, no retries."""
        if not key.webhook_url or not key.webhook_secret:
            return Outcome(None, "this key has no webhook")
        now = time.monotonic()
        if now - self._tests.get(key.id, -TEST_INTERVAL_S) < TEST_INTERVAL_S:
            return Outcome(None, "wait a moment between tests")
        self._tests = {k: t for k, t in self._tests.items() if now - t < TEST_INTERVAL_S}
        self._tests[key.id] = now
        body = self._body(EVENT_TEST, {"key": key.id})
        delivery = Delivery(key.id, key.webhook_url, key.webhook_secret, EVENT_TEST, None, body)
        delivery.max_attempts = 1  # the answer is shown at once
        return await self._attempt(delivery)


def of(state: Any) -> Webhooks:
    """The app's engine (``app.state.webhooks``)."""
    hooks: Webhooks = state.webhooks
    return hooks
