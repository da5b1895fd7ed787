"""The profile page: account facts, tier and usage, password, sessions, API keys,
account deletion."""

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

from coordinator.farm.engine import Farm
from coordinator.i18n import N_, gettext
from coordinator.i18n import gettext as _
from coordinator.request_context import client_ip, farm_of
from coordinator.services import (
    account_mail,
    apikeys,
    auth,
    entitlement,
    gallery,
    jobs,
    login_sessions,
    payments,
    submission,
    subscriptions,
    webhook_keys,
)
from coordinator.services import vouchers as voucher_service
from coordinator.store import models
from coordinator.web.base import redirect, render, require_user, session_lifetime, sign_in
from coordinator.web.billing import payments_of
from protocol import CloseCode


class ProfileError(ValueError):
    """A refused profile change; the message is shown to the user."""


# -- services ---------------------------------------------------------------


async def change_password(
    db: AsyncSession, user: models.User, old: str, new: str, confirm: str
) -> None:
    """Set a new password, end every session of the user and revoke their API keys:
    whoever had the old password may have used it to leave a way back in."""
    if not auth.verify_password(user.password_hash, old):
        raise ProfileError(gettext("The current password is wrong."))
    problem = auth.password_problem(new, user.username)
    if problem:
        raise ProfileError(problem)
    if new != confirm:
        raise ProfileError(gettext("The two new passwords differ."))
    await account_mail.replace_password(db, user, new)
    await db.commit()


async def delete_account(
    farm: Farm,
    db: AsyncSession,
    user: models.User,
    password: str,
    provider: payments.PaymentProvider | None = None,
) -> None:
    """Remove the user and everything they own: jobs, models, files, agents, keys;
    a paid subscription is cancelled at the provider first (no more charges)."""
    if not auth.verify_password(user.password_hash, password):
        raise ProfileError(gettext("The password is wrong; the account was not deleted."))
    sub = user.subscription
    if (
        sub is not None
        and sub.provider not in entitlement.NOT_RENEWING
        and sub.status in (entitlement.ACTIVE, entitlement.PAST_DUE)
        and sub.provider_subscription_id
    ):
        if provider is None or provider.name != sub.provider:
            raise ProfileError(
                gettext("Your paid subscription cannot be cancelled right now; try later.")
            )
        try:
            await provider.cancel(sub.provider_subscription_id, at_period_end=False)
        except payments.PaymentError as exc:
            raise ProfileError(str(exc)) from None
    owned = list(await db.scalars(select(models.Job).where(models.Job.user_id == user.id)))
    for job in owned:
        await jobs.cancel(farm, db, job, N_("the account was deleted"))
    for conn in [c for c in farm.agents.values() if c.owner_id == user.id]:
        with contextlib.suppress(Exception):
            await conn.close(CloseCode.BAD_TOKEN, "the owner's account was deleted")
    ids = [job.id for job in owned]
    await db.execute(delete(models.Result).where(models.Result.job_id.in_(ids)))
    await db.execute(delete(models.Job).where(models.Job.user_id == user.id))
    await db.execute(delete(models.DeletedJob).where(models.DeletedJob.user_id == user.id))
    await db.execute(delete(models.Agent).where(models.Agent.owner_id == user.id))
    await db.execute(delete(models.ApiKey).where(models.ApiKey.user_id == user.id))
    await login_sessions.end_all(db, user.id)
    await gallery.forget_likes_of(db, user.id)
    await db.execute(delete(models.User).where(models.User.id == user.id))
    await db.commit()
    for job_id in ids:
        await asyncio.to_thread(farm.store.delete, job_id)
    farm.forget_user(user.id)


async def profile_context(
    farm: Farm, db: AsyncSession, user: models.User, lifetime: login_sessions.Lifetime
) -> dict[str, Any]:
    tier_name = farm.refresh_user(user).tier
    granted = entitlement.entitlement(
        user, farm.tiers, farm.clock(), farm.settings.subscription_grace_s
    )
    keys = await db.scalars(
        select(models.ApiKey)
        .where(models.ApiKey.user_id == user.id)
        .order_by(models.ApiKey.created_at.desc())
    )
    return {
        "tier": farm.tiers[tier_name],
        "tier_expired": user.tier_expires_at is not None
        and user.tier != tier_name
        and farm.clock() >= user.tier_expires_at,
        "granted": granted,
        "subscription": user.subscription,
        "billing_history": await subscriptions.recent_history(db, user.id),
        "usage": await submission.usage_today(farm, db, user.id, farm.clock()),
        "keys": list(keys),
        "deliveries": await webhook_keys.recent(db, user.id),
        "sessions": await login_sessions.active(db, user.id, farm.clock(), lifetime),
        "lifetime": lifetime,
    }


# -- views ------------------------------------------------------------------


async def _page(
    request: Request, db: AsyncSession, user: models.User, status_code: int = 200, **extra: Any
) -> Response:
    context = await profile_context(farm_of(request), db, user, session_lifetime(request))
    token = auth.session_token(request)
    response = render(
        request,
        "profile.html",
        user,
        status_code=status_code,
        current_session=login_sessions.session_id(token) if token else None,
        **context,
        **extra,
    )
    # It may show a new API key, and always shows the sessions: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


async def profile_page(request: Request) -> Response:
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        saved = request.query_params.get("language") == "saved"
        return await _page(request, db, user, language_saved=saved)


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
        await sign_in(request, db, user)  # this browser stays logged in, on a new session
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
            raise HTTPException(404, gettext("No such API key."))
        await db.commit()
    return redirect(request, "/profile#api-keys")


async def revoke_all_keys(request: Request) -> Response:
    await auth.check_csrf(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        await apikeys.revoke_all(db, user.id)
        await db.commit()
    return redirect(request, "/profile#api-keys")


async def revoke_session(request: Request) -> Response:
    await auth.check_csrf(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        sid = request.path_params["session_id"]
        if not await login_sessions.revoke(db, user.id, sid):
            raise HTTPException(404, gettext("No such session."))
        await db.commit()
    token = auth.session_token(request)
    if token is not None and login_sessions.session_id(token) == sid:
        auth.logout_session(request)
        return redirect(request, "/login")
    return redirect(request, "/profile#sessions")


async def redeem_voucher(request: Request) -> Response:
    """Redeem a voucher code; wrong guesses are throttled per user and per address."""
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    limiter: auth.Limiter = request.app.state.voucher_limiter
    async with farm.sessions() as db:
        user = await require_user(request, db)
        allowed = await limiter.hit(f"user:{user.id}") and await limiter.hit(
            f"ip:{client_ip(request)}"
        )
        if not allowed:
            message = _("Too many codes tried; wait an hour and try again.")
            return await _page(request, db, user, 429, voucher_error=message)
        uid = user.id
        try:
            await voucher_service.redeem(farm, db, user, str(form.get("code") or ""))
        except voucher_service.VoucherError as exc:
            # A refused redemption was rolled back, which expired what the session held.
            again = await db.get(models.User, uid, populate_existing=True)
            assert again is not None
            return await _page(request, db, again, 400, voucher_error=str(exc))
    async with farm.sessions() as db:
        fresh = await db.get(models.User, uid, populate_existing=True)
        assert fresh is not None
        return await _page(request, db, fresh, voucher_redeemed=True)


async def delete_me(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        try:
            await delete_account(
                farm, db, user, str(form.get("password") or ""), payments_of(request)
            )
        except ProfileError as exc:
            return await _page(request, db, user, 400, delete_error=str(exc))
    auth.logout_session(request)
    return redirect(request, "/?deleted=1")


ROUTES = [
    Route("/profile", profile_page, methods=["GET"]),
    Route("/profile/password", password, methods=["POST"]),
    Route("/profile/api-keys", create_key, methods=["POST"]),
    Route("/profile/api-keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/profile/api-keys/revoke-all", revoke_all_keys, methods=["POST"]),
    Route("/profile/sessions/{session_id}/revoke", revoke_session, methods=["POST"]),
    Route("/profile/voucher", redeem_voucher, methods=["POST"]),
    Route("/profile/delete", delete_me, methods=["POST"]),
]
