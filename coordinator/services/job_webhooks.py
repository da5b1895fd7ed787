"""Webhooks per job: a URL given with an API submission hears that job's end.

The URL is checked like a key's (``coordinator.services.outbound``: form, length,
public addresses) and the delivery is signed with the submitting key's webhook secret,
exactly like the key's own deliveries (``coordinator.services.api_webhooks``, which
sends both). A key without a secret cannot name one: the submission is refused
(:class:`SecretMissingError`) and the user makes the secret on the profile page.

Bounded: a user's live jobs (waiting or running) may name at most
:data:`MAX_URLS_PER_USER` distinct URLs, and the whole farm tracks at most
:data:`MAX_LIVE` live jobs with a URL of their own (:class:`LimitError`, retry once
some ended). Which live jobs have a URL is kept in memory (loaded at start).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Connection, Table, bindparam, select

from coordinator.farm.engine import Farm
from coordinator.services.outbound import check_url
from coordinator.store import models
from scheduler.lifecycle import JobState

MAX_URLS_PER_USER = 5
MAX_LIVE = 100_000
LIVE_STATES = (JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING)

_KEYS = cast(Table, models.ApiKey.__table__)
_JOBS = cast(Table, models.Job.__table__)
_SECRET = select(_KEYS.c.webhook_secret).where(_KEYS.c.id == bindparam("b_key_id"))
_LIVE = select(_JOBS.c.id, _JOBS.c.user_id, _JOBS.c.webhook_url).where(
    _JOBS.c.webhook_url.is_not(None), _JOBS.c.state.in_([str(s) for s in LIVE_STATES])
)


class SecretMissingError(Exception):
    """The submitting key has no webhook secret yet (made on the profile page)."""


class LimitError(Exception):
    """Too many distinct per-job URLs are pending (for the user, or in all)."""


@dataclass
class Claim:
    """One submission's per-job URL (``url`` None: none asked); ``jobs`` once created."""

    user_id: int
    url: str | None
    jobs: list[models.Job] = field(default_factory=list)


class PerJob:
    """Which live jobs have a URL of their own, and the bounds on them."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.jobs: dict[str, tuple[int, str]] = {}  # live job -> (owner, its URL)
        self.urls: dict[int, Counter[str]] = {}  # owner -> URL -> live jobs (and claims)
        self.claiming: Counter[int] = Counter()  # owners with a submission in flight

    async def load(self) -> None:
        rows = await self.farm.reader.run(lambda db: db.execute(_LIVE).all())
        for job_id, user_id, url in rows:
            self._add(job_id, user_id, url)

    def _add(self, job_id: str, user_id: int, url: str) -> None:
        self.jobs[job_id] = (user_id, url)
        self.urls.setdefault(user_id, Counter())[url] += 1

    def _drop(self, user_id: int, url: str) -> None:
        urls = self.urls.get(user_id)
        if urls is None:
            return
        urls[url] -= 1
        if urls[url] <= 0:
            del urls[url]
        if not urls:
            del self.urls[user_id]

    def watches(self, job_id: str, owner: int | None) -> bool:
        """Whether a change of this job may concern a per-job URL (looked at when it ends).
        A submission still in flight counts for all its owner's jobs: its jobs may end
        before they are known here."""
        return job_id in self.jobs or (owner is not None and owner in self.claiming)

    def ended(self, job_id: str) -> None:
        found = self.jobs.pop(job_id, None)
        if found is not None:
            self._drop(*found)

    def requeued(self, job: models.Job) -> None:
        """An administrator put an ended job back in line: its own URL hears its end again."""
        live = self.farm.owner_of(job.id) is not None
        if job.webhook_url and live and job.id not in self.jobs and len(self.jobs) < MAX_LIVE:
            self._add(job.id, job.user_id, job.webhook_url)

    @contextlib.asynccontextmanager
    async def claim(
        self, user_id: int, key_id: str | None, url: str | None, allow_private: bool
    ) -> AsyncIterator[Claim]:
        """Around one submission: checks ``url`` (WebhookError), the key's secret
        (SecretMissingError) and the bounds (LimitError), then tracks the jobs the body
        put in :attr:`Claim.jobs`."""
        if url is None:
            yield Claim(user_id, None)
            return
        url = check_url(url, allow_private)
        if key_id is None or not await self._has_secret(key_id):
            raise SecretMissingError(key_id)
        self._check_bounds(user_id, url)
        claim = Claim(user_id, url)
        self.urls.setdefault(user_id, Counter())[url] += 1  # held while in flight
        self.claiming[user_id] += 1
        try:
            yield claim
        finally:
            self.claiming[user_id] -= 1
            if self.claiming[user_id] <= 0:
                del self.claiming[user_id]
            for job in claim.jobs:
                # One that already ended was looked at through ``claiming``.
                if self.farm.owner_of(job.id) is not None and len(self.jobs) < MAX_LIVE:
                    self._add(job.id, user_id, url)
            self._drop(user_id, url)

    def _check_bounds(self, user_id: int, url: str) -> None:
        pending = self.urls.get(user_id, Counter())
        if url not in pending and len(pending) >= MAX_URLS_PER_USER:
            raise LimitError(
                f"Your waiting and running jobs already name {MAX_URLS_PER_USER} different "
                "webhook URLs; reuse one of them or wait until some of those jobs end."
            )
        if len(self.jobs) + sum(self.claiming.values()) >= MAX_LIVE:
            raise LimitError("Too many jobs with their own webhook URL are waiting; retry later.")

    async def _has_secret(self, key_id: str) -> bool:
        read: Callable[[Connection], str | None] = lambda db: db.execute(  # noqa: E731
            _SECRET, {"b_key_id": key_id}
        ).scalar()
        return bool(await self.farm.reader.run(read))
