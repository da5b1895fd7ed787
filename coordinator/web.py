"""Shared plumbing for the HTML views: templates, the current user, responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.templating import Jinja2Templates

import webui
from coordinator import auth, login_sessions, models
from coordinator.farm import Farm


class LoginRequiredError(Exception):
    """Raised by views that need a user; answered with a redirect to the login page."""


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(webui.TEMPLATES))
    env: Environment = templates.env
    env.globals["csrf_token"] = auth.csrf_token
    env.filters["duration"] = _duration
    env.filters["datetime"] = _datetime
    return templates


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _datetime(epoch: float | None) -> str:
    import datetime as dt

    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def farm_of(request: Request) -> Farm:
    farm: Farm = request.app.state.farm
    return farm


def session_lifetime(request: Request) -> login_sessions.Lifetime:
    settings = farm_of(request).settings
    return login_sessions.Lifetime(settings.session_idle_s, settings.session_max_age_s)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


async def current_user(request: Request, db: AsyncSession) -> models.User | None:
    """The logged-in user, if the cookie names a live session record."""
    token = auth.session_token(request)
    if token is None:
        return None
    user = await login_sessions.resolve(
        db, token, farm_of(request).clock(), session_lifetime(request)
    )
    if user is None:
        auth.logout_session(request)
    return user


async def sign_in(request: Request, db: AsyncSession, user: models.User) -> None:
    """Start a session record for ``user``, commit, and point the cookie at it."""
    token = await login_sessions.start(
        db,
        user.id,
        farm_of(request).clock(),
        client_ip(request),
        request.headers.get("user-agent", ""),
        session_lifetime(request),
    )
    await db.commit()
    auth.login_session(request, token)


async def sign_out(request: Request, db: AsyncSession) -> None:
    """End the cookie's session record (every copy of the cookie with it)."""
    token = auth.session_token(request)
    if token is not None:
        await login_sessions.end(db, token)
        await db.commit()
    auth.logout_session(request)


async def require_user(request: Request, db: AsyncSession) -> models.User:
    user = await current_user(request, db)
    if user is None:
        raise LoginRequiredError
    return user


async def require_admin(request: Request, db: AsyncSession) -> models.User:
    user = await require_user(request, db)
    if not user.is_admin:
        raise HTTPException(403, "This page is for administrators.")
    return user


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request,
    template: str,
    user: models.User | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "farm": farm_of(request), **context},
        status_code=status_code,
    )


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    """A Server-Sent Events stream; nginx must not buffer it, browsers must not cache it."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def redirect(request: Request, url: str) -> Response:
    """A redirect that also works for htmx requests (full page navigation)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(request, f"/login?next={quote(target, safe='')}")
