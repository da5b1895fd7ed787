"""The profile page: account facts, tier and usage, password, API keys, account deletion."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator import apikeys, auth, jobs, models
from coordinator.farm import Farm
from coordinator.web import farm_of, redirect, render, require_user


class ProfileError(ValueError):
    """A refused profile change; the message is shown to the user."""


# -- services ---------------------------------------------------------------


async def change_password(
    db: AsyncSession, user: models.User, old: str, new: str, confirm: str
) -> None:
    """Set a new password and revoke every existing session of the user."""
    if not auth.verify_password(user.password_hash, old):
        raise ProfileError("The current password is wrong.")
    problem = auth.password_problem(new, user.username)
    if problem:
        raise ProfileError(problem)
    if new != confirm:
        raise ProfileError("The two new passwords differ.")
    user.password_hash = auth.hash_password(new)
    user.session_version += 1
    await db.commit()


async def delete_account(farm: Farm, db: AsyncSession, user: models.User, password: str) -> None:
    """Remove the user and everything they own: jobs, models, files, agents, keys."""
    if not auth.verify_password(user.password_hash, password):
        raise ProfileError("The password is wrong; the account was not deleted.")
    owned = list(await db.scalars(select(models.Job).where(models.Job.user_id == user.id)))
    for job in owned:
        await jobs.cancel(farm, db, job, "the account was deleted")
    for conn in [c for c in farm.agents.values() if c.owner_id == user.id]:
        with contextlib.suppress(Exception):
            await conn.close(4401, "the owner's account was deleted")
    ids = [job.id for job in owned]
    await db.execute(delete(models.Result).where(models.Result.job_id.in_(ids)))
    await db.execute(delete(models.Job).where(models.Job.user_id == user.id))
    await db.execute(delete(models.DeletedJob).where(models.DeletedJob.user_id == user.id))
    await db.execute(delete(models.Agent).where(models.Agent.owner_id == user.id))
    await db.execute(delete(models.ApiKey).where(models.ApiKey.user_id == user.id))
    await db.execute(delete(models.User).where(models.User.id == user.id))
    await db.commit()
    for job_id in ids:
        await asyncio.to_thread(farm.store.delete, job_id)
    farm.users.pop(str(user.id), None)


async def profile_context(farm: Farm, db: AsyncSession, user: models.User) -> dict[str, Any]:
    tier_name = farm.refresh_user(user).tier
    keys = await db.scalars(
        select(models.ApiKey)
        .where(models.ApiKey.user_id == user.id)
        .order_by(models.ApiKey.created_at.desc())
    )
    return {
        "tier": farm.tiers[tier_name],
        "tier_expired": tier_name != user.tier,
        "usage": await jobs.usage_today(db, user.id, farm.clock()),
        "keys": list(keys),
    }


# -- views ------------------------------------------------------------------


async def _page(
    request: Request, db: AsyncSession, user: models.User, status_code: int = 200, **extra: Any
) -> Response:
    context = await profile_context(farm_of(request), db, user)
    return render(request, "profile.html", user, status_code=status_code, **context, **extra)


async def profile_page(request: Request) -> Response:
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        return await _page(request, db, user)


async def password(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        try:
            await change_password(
                db,
                user,
                str(form.get("old_password") or ""),
                str(form.get("new_password") or ""),
                str(form.get("new_password2") or ""),
            )
        except ProfileError as exc:
            return await _page(request, db, user, 400, password_error=str(exc))
        auth.login_session(request, user)  # this session lives on with the new version
        return await _page(request, db, user, password_changed=True)


async def create_key(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        try:
            _, secret = await apikeys.create(db, user, str(form.get("name") or ""), farm.clock())
        except apikeys.ApiKeyError as exc:
            return await _page(request, db, user, 400, key_error=str(exc))
        await db.commit()
        return await _page(request, db, user, 201, new_key=secret)


async def revoke_key(request: Request) -> Response:
    await auth.check_csrf(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        if not await apikeys.revoke(db, user, request.path_params["key_id"]):
            raise HTTPException(404, "No such API key.")
        await db.commit()
    return redirect(request, "/profile#api-keys")


async def delete_me(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        try:
            await delete_account(farm, db, user, str(form.get("password") or ""))
        except ProfileError as exc:
            return await _page(request, db, user, 400, delete_error=str(exc))
    auth.logout_session(request)
    return redirect(request, "/?deleted=1")


ROUTES = [
    Route("/profile", profile_page, methods=["GET"]),
    Route("/profile/password", password, methods=["POST"]),
    Route("/profile/api-keys", create_key, methods=["POST"]),
    Route("/profile/api-keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/profile/delete", delete_me, methods=["POST"]),
]
