"""Webhooks per API key and per job: a signed POST when a job submitted with the key ends.

The body is JSON (``{"event": "job.finished", "sent_at", "job": {...}}``; the test
button sends ``"event": "ping"``). Each request carries ``Shapefarm-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed by the key's webhook
secret>``, ``Shapefarm-Event`` and ``Shapefarm-Delivery`` (an id, the same on every
retry); receivers should check the HMAC and refuse old timestamps (replays). A job
submitted with its own ``webhook_url`` (``coordinator.services.job_webhooks``) is sent
there too, signed the same way with the same key's secret (once when both URLs are
the same).

Kept until sent (at least once): a job's end is written to the ``webhook_outbox``
table in the transaction that ends it (``coordinator.farm.lifecycle``), and each
delivery stays there, with its id, body and attempts, until its last attempt is logged.
A restart, or a replica that stops, loses nothing: rows claimed by a process that is
gone are taken over once their claim runs out (:data:`LEASE_S`; at start-up at once
without replica mode). A receiver may therefore see a delivery twice (an attempt cut
off by a crash is made again): ``Shapefarm-Delivery`` stays the same.

Bounded: :data:`WORKERS` send at a time per process, each attempt has :data:`TIMEOUT_S`,
a failed attempt (no answer, or not 2xx) is tried again after 1, 2, 4, 8 s
(:data:`ATTEMPTS` in all) without holding a worker, redirects are not followed and
answers are not read. One key has at most :data:`PENDING_PER_KEY` deliveries waiting
(to be sent, or between attempts); more are logged as dropped, so that one user's
slow receivers cannot hold everyone's. The log keeps the last :data:`LOG_KEEP`
deliveries per key.

Server-side request forgery: see ``coordinator.services.outbound`` (public addresses
only unless ``webhooks_allow_private``; the request goes to the checked address).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import (
    Connection,
    Row,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy import cast as sql_cast

from coordinator.farm.engine import Farm
from coordinator.services import outbox
from coordinator.services.api_reads import read_job
from coordinator.services.job_webhooks import PerJob
from coordinator.services.jobs import result_json
from coordinator.services.outbound import WebhookError, resolve
from coordinator.store import models

log = logging.getLogger(__name__)

WORKERS = 4
ATTEMPTS = 5
BACKOFF_S = 1.0
TIMEOUT_S = 5.0
LOG_KEEP = 50
PENDING_PER_KEY = 100
TEST_INTERVAL_S = 2.0  # the "send test" button, per key
LEASE_S = 60.0  # a claimed outbox row is its process's this long (an attempt: <= TIMEOUT_S)
EVENT_FINISHED, EVENT_TEST = "job.finished", "ping"

_KEYS = cast(Table, models.ApiKey.__table__)
_LOG = cast(Table, models.WebhookDelivery.__table__)
_HOOK = select(_KEYS.c.webhook_url, _KEYS.c.webhook_secret).where(
    _KEYS.c.id == bindparam("b_key_id")
)
_OUTBOX = cast(Table, models.WebhookOutbox.__table__)
_ADD_LOG = insert(_LOG)
_BUSY = _OUTBOX.alias("busy")
# Keys with an attempt in flight in some process (one uncorrelated look, not one per row).
_BUSY_KEYS = select(_BUSY.c.api_key_id).where(
    _BUSY.c.api_key_id.is_not(None),
    _BUSY.c.claim.is_not(None),
    _BUSY.c.claimed_until > bindparam("b_now"),
)
# The earliest due rows of keys with no attempt in flight anywhere (walked in the order
# of the next_at index: the cost is bounded by this window, not by the backlog).
CANDIDATES = 256
_CANDIDATES = (
    select(_OUTBOX.c.id, _OUTBOX.c.api_key_id, _OUTBOX.c.next_at)
    .where(
        _OUTBOX.c.next_at <= bindparam("b_now"),
        _OUTBOX.c.claimed_until <= bindparam("b_now"),
        or_(_OUTBOX.c.api_key_id.is_(None), _OUTBOX.c.api_key_id.not_in(_BUSY_KEYS)),
    )
    .order_by(_OUTBOX.c.next_at, _OUTBOX.c.id)
    .limit(CANDIDATES)
    .subquery()
)
# At most one of them per key: one user's receivers that never answer hold one sender
# at a time, not all of them. (A job's end not yet expanded has no key: each is its own.)
_FIRST_DUE = select(
    _CANDIDATES.c.id,
    func.row_number()
    .over(
        partition_by=func.coalesce(_CANDIDATES.c.api_key_id, sql_cast(_CANDIDATES.c.id, String)),
        order_by=(_CANDIDATES.c.next_at, _CANDIDATES.c.id),
    )
    .label("rank"),
).subquery()
_DUE = (
    select(*_OUTBOX.c, _KEYS.c.webhook_secret)
    .select_from(
        _OUTBOX.join(_FIRST_DUE, _FIRST_DUE.c.id == _OUTBOX.c.id).outerjoin(
            _KEYS, _KEYS.c.id == _OUTBOX.c.api_key_id
        )
    )
    .where(_FIRST_DUE.c.rank == 1)
    .order_by(_OUTBOX.c.next_at, _OUTBOX.c.id)
    .limit(bindparam("b_limit"))
)
ROWS = outbox.Statements.of(_OUTBOX)
_ADD_DELIVERY = insert(_OUTBOX)
_WAITING = select(func.count()).where(
    _OUTBOX.c.api_key_id == bindparam("b_key_id"), _OUTBOX.c.url.is_not(None)
)
_KEY_EXISTS = select(_KEYS.c.id).where(_KEYS.c.id == bindparam("b_key_id"))
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
    started: float  # when the job ended (the test button: when pressed), for the log
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    attempts: int = 0
    max_attempts: int = ATTEMPTS
    per_job: bool = False  # to the job's own URL, not the key's
    row: int | None = None  # its outbox row (None: the test button's, never stored)
    claim: str = ""  # this process's claim on that row

    @classmethod
    def of_row(cls, row: Row[Any], claim: str) -> Delivery:
        assert row.api_key_id is not None and row.url is not None and row.body is not None
        return cls(
            row.api_key_id, row.url, row.webhook_secret or "", EVENT_FINISHED, row.job_id,
            row.body.encode(), row.created_at, row.delivery_id or secrets.token_urlsafe(12),
            row.attempts, per_job=row.per_job, row=row.id, claim=claim,
        )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Webhooks:
    """The delivery engine of one process: the outbox, a few senders, timed retries."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.allow_private = farm.settings.webhooks_allow_private
        self.backoff_s = BACKOFF_S
        self.timeout_s = TIMEOUT_S
        self.users: set[int] = set()  # users with a webhook on some key
        self.per_job = PerJob(farm)
        self.dropped = 0  # deliveries refused by a key's bound (PENDING_PER_KEY)
        self.logged = 0  # deliveries finished and written to the log (tests, metrics)
        self._logged = asyncio.Condition()
        self._tests: dict[str, float] = {}
        self.pump = outbox.Pump(farm, "webhooks", _DUE, ROWS, self._handle, WORKERS, LEASE_S)
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
        await self.pump.start()
        self.farm.watch(self._job_changed)

    async def stop(self) -> None:
        """Stop sending; what is left stays in the outbox for the next start."""
        self.farm.unwatch(self._job_changed)
        await self.pump.stop()
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
            self.pump.wake()  # its end is in the outbox (committed before it was announced)

    async def _deliveries_for(self, job_id: str, ended_at: float) -> list[Delivery]:
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
            Delivery(key_id, url, secret, EVENT_FINISHED, job.id, body, ended_at, per_job=per_job)
            for url, per_job in urls
        ]

    def _body(self, event: str, extra: dict[str, Any]) -> bytes:
        return json.dumps({"event": event, "sent_at": self.farm.clock(), **extra}).encode()

    # -- the outbox -------------------------------------------------------

    async def _handle(self, row: Row[Any], claim: str) -> None:
        if row.url is not None:
            try:
                delivery = Delivery.of_row(row, claim)
            except Exception:  # a row no attempt can read: it would only come back
                log.exception("webhook outbox row %d (job %s) dropped", row.id, row.job_id)
                await self.pump.drop(row.id, claim)
                return
            await self._attempt(delivery)
            return
        try:
            await self._expand(row, claim)
        except Exception:  # the database, for a moment: try again, a few times
            attempts = row.attempts + 1
            if attempts >= ATTEMPTS:
                log.exception("the end of job %s not told: gave up expanding it", row.job_id)
                await self.pump.drop(row.id, claim)
                return
            log.exception("the end of job %s not expanded yet (try %d)", row.job_id, attempts)
            await self.pump.again(row.id, claim, attempts, self._backoff(attempts))

    async def _expand(self, row: Row[Any], claim: str) -> None:
        """A job's end becomes its deliveries (in the transaction that removes the end)."""
        deliveries = await self._deliveries_for(row.job_id, row.created_at)
        clock = self.farm.clock

        def unit(db: Connection) -> list[Delivery]:
            if not db.execute(ROWS.done, outbox.mine(row.id, claim)).rowcount:
                return []  # not ours any more: the process that took it over expands it
            dropped = []
            for delivery in deliveries:
                if (db.execute(_WAITING, {"b_key_id": delivery.key_id}).scalar() or 0) >= (
                    PENDING_PER_KEY
                ):
                    error = f"dropped: {PENDING_PER_KEY} deliveries of this key were waiting"
                    _write_log(db, delivery, Outcome(None, error), clock())
                    dropped.append(delivery)
                    continue
                db.execute(_ADD_DELIVERY, _delivery_row(delivery, clock()))
            return dropped

        dropped = await self.farm.writer.run(unit)
        self.dropped += len(dropped)
        await self._count_logged(len(dropped))

    # -- sending ----------------------------------------------------------

    async def _attempt(self, delivery: Delivery) -> Outcome:
        delivery.attempts += 1
        try:
            outcome = await self.post(delivery)
        except Exception as exc:  # a bug, not the receiver: counted as a failed attempt
            log.exception("webhook delivery %s failed", delivery.id)
            outcome = Outcome(None, f"internal error: {type(exc).__name__}")
        if outcome.ok or delivery.attempts >= delivery.max_attempts:
            await self._log(delivery, outcome)
            return outcome
        if delivery.row is not None:
            delay = self._backoff(delivery.attempts)
            await self.pump.again(delivery.row, delivery.claim, delivery.attempts, delay)
        return outcome

    def _backoff(self, attempts: int) -> float:
        """The wait after ``attempts`` failed: 1, 2, 4, 8 s (times ``backoff_s``)."""
        return float(self.backoff_s * 2 ** (attempts - 1))

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

    async def _log(self, delivery: Delivery, outcome: Outcome) -> None:
        """The delivery is over: logged, and its outbox row gone, in one transaction."""
        now = self.farm.clock()

        def unit(db: Connection) -> bool:
            if delivery.row is not None:
                # Not ours any more (taken over; its key revoked): the log is not ours either.
                return bool(
                    db.execute(ROWS.done, outbox.mine(delivery.row, delivery.claim)).rowcount
                ) and (_write_log(db, delivery, outcome, now))
            return _write_log(db, delivery, outcome, now)

        if await self.farm.writer.run(unit):
            await self._count_logged(1)

    async def _count_logged(self, count: int) -> None:
        if count:
            async with self._logged:
                self.logged += count
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
        delivery = Delivery(
            key.id, key.webhook_url, key.webhook_secret, EVENT_TEST, None, body, self.farm.clock()
        )
        delivery.max_attempts = 1  # the answer is shown at once
        return await self._attempt(delivery)


def _delivery_row(delivery: Delivery, now: float) -> dict[str, Any]:
    assert delivery.job_id is not None, "only a job's deliveries are kept in the outbox"
    return {
        "job_id": delivery.job_id,
        "api_key_id": delivery.key_id,
        "url": delivery.url,
        "per_job": delivery.per_job,
        "delivery_id": delivery.id,
        "body": delivery.body.decode(),
        "attempts": 0,
        "created_at": delivery.started,
        "next_at": now,
        "claim": None,
        "claimed_until": 0.0,
    }


def _write_log(db: Connection, delivery: Delivery, outcome: Outcome, now: float) -> bool:
    """One entry of the key's log (pruned to LOG_KEEP); False if the key is gone."""
    if db.execute(_KEY_EXISTS, {"b_key_id": delivery.key_id}).first() is None:
        return False
    row = {
        "api_key_id": delivery.key_id,
        "job_id": delivery.job_id,
        "event": delivery.event,
        "url": delivery.url,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "attempts": delivery.attempts,
        "at": now,
        "duration_ms": max(now - delivery.started, 0.0) * 1000,
        "per_job": delivery.per_job,
    }
    db.execute(_ADD_LOG, row)
    db.execute(_PRUNE_LOG, {"b_key_id": delivery.key_id})
    return True


def of(state: Any) -> Webhooks:
    """The app's engine (``app.state.webhooks``)."""
    hooks: Webhooks = state.webhooks
    return hooks
