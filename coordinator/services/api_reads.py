"""The hot API routes without ORM sessions: the caller from the key cache, one read per request.

``GET /api/v1/jobs/{id}`` and the download used to cost four ``db.get`` through an
ORM session over aiosqlite (key, user, job, result), each several thread hand-offs.
Now the API key comes from :class:`~coordinator.store.keycache.KeyCache` and the job
with its result is one statement (built once) run by the farm's
:class:`~coordinator.store.db.Reader`; on a cache miss the key and the job are read
in the same unit, so a request makes at most one trip to the database, and none for
a job that finished in this process moments ago (its committed rows are kept:
``Farm.final_row``, ``coordinator/farm/finals.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Unpack, cast

from sqlalchemy import Connection, Row, Table, bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value

from coordinator.farm.engine import Farm
from coordinator.farm.finals import FinalRow
from coordinator.services import tokens
from coordinator.store import models
from coordinator.store.keycache import CachedKey

_Row = Row[Unpack[tuple[Any, ...]]]  # noqa: UP044 (mypy reads this spelling)
LAST_USED_RESOLUTION_S = 60.0  # "last used" is for people, to the minute

_KEYS = cast(Table, models.ApiKey.__table__)
_USERS = cast(Table, models.User.__table__)
_JOBS = cast(Table, models.Job.__table__)
_RESULTS = cast(Table, models.Result.__table__)
_SUBSCRIPTIONS = cast(Table, models.Subscription.__table__)
_JOB_KEYS = tuple(c.key for c in _JOBS.c)
_RESULT_KEYS = tuple(c.key for c in _RESULTS.c)
_USER_KEYS = tuple(c.key for c in _USERS.c)
_SUBSCRIPTION_KEYS = tuple(c.key for c in _SUBSCRIPTIONS.c)
# Built once: constructing a statement costs more than running it on SQLite.
_KEY = (
    select(_KEYS.c.key_hash, _KEYS.c.user_id, _KEYS.c.last_used_at, _USERS.c.is_admin)
    .select_from(_KEYS.join(_USERS, _USERS.c.id == _KEYS.c.user_id))
    .where(_KEYS.c.id == bindparam("b_key_id"), _USERS.c.banned.is_(False))
)
_JOB = (
    select(*_JOBS.c, *(c.label(f"r_{c.key}") for c in _RESULTS.c))
    .select_from(_JOBS.outerjoin(_RESULTS, _RESULTS.c.job_id == _JOBS.c.id))
    .where(_JOBS.c.id == bindparam("b_job_id"))
)
# The key's owner with its subscription (what the effective tier is computed from), as
# the ORM's joined load of User.subscription reads it; banned owners are read too.
_OWNER = (
    select(*_USERS.c, *(c.label(f"s_{c.key}") for c in _SUBSCRIPTIONS.c))
    .select_from(
        _KEYS.join(_USERS, _USERS.c.id == _KEYS.c.user_id).outerjoin(
            _SUBSCRIPTIONS, _SUBSCRIPTIONS.c.user_id == _USERS.c.id
        )
    )
    .where(_KEYS.c.id == bindparam("b_key_id"))
)
_TOUCH = (
    update(_KEYS).where(_KEYS.c.id == bindparam("b_key_id")).values(last_used_at=bindparam("b_now"))
)


@dataclass(frozen=True)
class Caller:
    """Who an API request comes from, as far as the hot routes need to know."""

    key_id: str
    user_id: int
    is_admin: bool


def _cached(row: _Row | None, now: float) -> CachedKey | None:
    if row is None:
        return None
    return CachedKey(row.key_hash, row.user_id, bool(row.is_admin), row.last_used_at, now)


async def _verify(farm: Farm, key_id: str, secret: str, entry: CachedKey | None) -> Caller | None:
    if entry is None or not tokens.matches(entry.key_hash, secret):
        return None
    now = farm.clock()
    last = entry.last_used_at
    if last is None or not 0 <= now - last < LAST_USED_RESOLUTION_S:
        farm.keys.touched(key_id, entry, now)
        params = {"b_key_id": key_id, "b_now": now}
        await farm.writer.run(lambda db: db.execute(_TOUCH, params).rowcount)
    return Caller(key_id, entry.user_id, entry.is_admin)


async def _authenticated(
    farm: Farm, token: str, read: Callable[[Connection], _Row | None] | None = None
) -> tuple[Caller | None, _Row | None, bool]:
    """The caller; on a cache miss also ``read``'s row, read in the same unit as the key.

    Returns (caller, row, whether ``read`` ran)."""
    parsed = tokens.parse(token, tokens.API_KEY_PREFIX)
    if parsed is None:
        return None, None, False
    key_id, secret = parsed.id, parsed.secret
    now = farm.clock()
    entry = farm.keys.get(key_id, now)
    if entry is not None:
        return await _verify(farm, key_id, secret, entry), None, False
    generation = farm.keys.generation

    def unit(db: Connection) -> tuple[_Row | None, _Row | None]:
        key = db.execute(_KEY, {"b_key_id": key_id}).first()
        return key, read(db) if read is not None and key is not None else None

    key_row, row = await farm.reader.run(unit)
    entry = _cached(key_row, now)
    if entry is not None:
        farm.keys.put(key_id, entry, generation)
    return await _verify(farm, key_id, secret, entry), row, True


async def identify(farm: Farm, token: str) -> Caller | None:
    """The caller an ``sfk.`` key names, or None (unknown, wrong secret, revoked, banned)."""
    return (await _authenticated(farm, token))[0]


def read_job(db: Connection, job_id: str) -> tuple[models.Job, models.Result | None] | None:
    """A unit for ``farm.reader``: the job and its result (no owner check)."""
    return _job_and_result(db.execute(_JOB, {"b_job_id": job_id[:64]}).first())


def _job_and_result(row: _Row | None) -> tuple[models.Job, models.Result | None] | None:
    if row is None:
        return None
    values = row._mapping
    job = models.loaded(models.Job, {key: values[key] for key in _JOB_KEYS})
    if values["r_job_id"] is None:
        return job, None
    return job, models.loaded(models.Result, {key: values[f"r_{key}"] for key in _RESULT_KEYS})


def _from_final(final: FinalRow) -> tuple[models.Job, models.Result | None]:
    job = models.loaded(models.Job, {key: final.job[key] for key in _JOB_KEYS})
    if final.result is None:
        return job, None
    return job, models.loaded(models.Result, {key: final.result[key] for key in _RESULT_KEYS})


def finished_job(farm: Farm, job_id: str) -> tuple[models.Job, models.Result | None] | None:
    """A job that finished in this process moments ago, as the transaction that finished
    it committed it (``Farm.final_row``): no read. None: read it."""
    final = farm.final_row(job_id)
    return None if final is None else _from_final(final)


class NotAllowedError(Exception):
    """No valid API key came with the request."""


async def owned_job(
    farm: Farm, token: str, job_id: str
) -> tuple[Caller, tuple[models.Job, models.Result | None] | None]:
    """The caller and the job with its result, if the caller may see it (owner or admin).

    Raises :class:`NotAllowedError` for a missing or bad key. One database trip at most;
    none for a cached key and a job that finished here moments ago (one process only:
    another replica may have changed the row since, without telling this one).
    """
    params = {"b_job_id": job_id[:64]}

    def read(db: Connection) -> _Row | None:
        return db.execute(_JOB, params).first()

    kept = None if farm.replicated else finished_job(farm, job_id)
    caller, job_row, was_read = await _authenticated(farm, token, None if kept else read)
    if caller is None:
        raise NotAllowedError
    found = kept
    if found is None:
        if not was_read:
            job_row = await farm.reader.run(read)
        found = _job_and_result(job_row)
    if found is None or not (caller.is_admin or found[0].user_id == caller.user_id):
        return caller, None
    return caller, found


def _owner(row: _Row | None) -> models.User | None:
    """A detached User (with its subscription loaded) from an ``_OWNER`` row."""
    if row is None:
        return None
    values = row._mapping
    user = models.loaded(models.User, {key: values[key] for key in _USER_KEYS})
    subscription = None
    if values["s_id"] is not None:
        subscription = models.loaded(
            models.Subscription, {key: values[f"s_{key}"] for key in _SUBSCRIPTION_KEYS}
        )
    set_committed_value(user, "subscription", subscription)
    return user


async def key_owner(farm: Farm, token: str) -> tuple[Caller, models.User] | None:
    """The caller and its user (subscription loaded), for submissions: one read, no session;
    none while the key's cache entry keeps the owner's row (``KeyCache.owned``).

    None for a missing, wrong, revoked or banned key (the key cache refuses the latter)
    and for an owner that is banned or gone by the time the row is read."""
    parsed = tokens.parse(token, tokens.API_KEY_PREFIX)
    if parsed is None:
        return None
    params = {"b_key_id": parsed.id}

    def read(db: Connection) -> _Row | None:
        return db.execute(_OWNER, params).first()

    generation = farm.keys.generation
    caller, row, was_read = await _authenticated(farm, token, read)
    entry = farm.keys.get(parsed.id, farm.clock()) if caller is not None else None
    if caller is not None and not was_read:
        row = entry.owner if entry is not None else None
        if row is None:
            generation = farm.keys.generation
            row = await farm.reader.run(read)
    if entry is not None and entry.owner is None and row is not None:
        farm.keys.owned(parsed.id, entry, row, generation)  # the next submission reads nothing
    user = _owner(row)
    if caller is None or user is None or user.banned or user.id != caller.user_id:
        return None
    return caller, user
