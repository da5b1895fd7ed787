"""The navigation's language switcher: a cookie for everyone, and the saved
preference of a logged-in user who has one (else the preference, which comes
first, would undo the switch)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator import i18n
from coordinator.request_context import farm_of
from coordinator.services import auth
from coordinator.store import models
from coordinator.web.base import current_user, redirect, require_user, safe_next


def remember(request: Request, response: Response, lang: str) -> None:
    """Set the switcher's cookie (a year; survives login and logout)."""
    response.set_cookie(
        i18n.COOKIE,
        lang,
        max_age=i18n.COOKIE_MAX_AGE,
        path="/",
        samesite="lax",
        httponly=True,
        secure=farm_of(request).settings.secure_cookies,
    )


async def save_preference(db: AsyncSession, user: models.User, lang: str | None) -> None:
    """Store ``lang`` (None: no preference) as the user's UI language."""
    user.locale = i18n.valid(lang)
    await db.commit()


async def switch_language(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    lang = i18n.valid(form.get("lang"))
    if lang is None:
        raise HTTPException(400, i18n.gettext("That language is not available."))
    async with farm_of(request).sessions() as db:
        user = await current_user(request, db)
        if user is not None and user.locale is not None:
            await save_preference(db, user, lang)
    response = redirect(request, safe_next(form.get("back")))
    remember(request, response, lang)
    return response


async def profile_language(request: Request) -> Response:
    """The profile's saved preference: a language, or "" for none (automatic)."""
    await auth.check_csrf(request)
    form = await request.form()
    raw = form.get("lang")
    lang = i18n.valid(raw)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        if lang is None and raw != "":
            raise HTTPException(400, i18n.gettext("That language is not available."))
        await save_preference(db, user, lang)
    response = redirect(request, "/profile?language=saved#language")
    if lang is not None:
        remember(request, response, lang)  # and after logging out, too
    return response


ROUTES = [
    Route("/language", switch_language, methods=["POST"]),
    Route("/profile/language", profile_language, methods=["POST"]),
]
