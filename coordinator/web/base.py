"""Shared plumbing for the HTML views: templates, the current user, responses."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

import webui
from coordinator import formats, i18n, labels
from coordinator.farm.engine import Farm
from coordinator.i18n import gettext
from coordinator.meshes import compact
from coordinator.request_context import client_ip, farm_of
from coordinator.services import auth, jobs, login_sessions
from coordinator.store import models
from coordinator.web.streams import StreamLimiter, StreamLimitError, StreamSlot
from protocol import limits


class LoginRequiredError(Exception):
    """Raised by views that need a user; answered with a redirect to the login page."""


def make_templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(str(webui.TEMPLATES)),
        autoescape=select_autoescape(),
        extensions=["jinja2.ext.i18n"],
    )
    # Newstyle gettext: translations are escaped and %-formatted by ``_`` itself.
    # jinja2.ext.i18n adds this method to the environment at run time; jinja2's types lack it.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext,
        i18n.ngettext,
        newstyle=True,
        pgettext=i18n.pgettext,
        npgettext=i18n.npgettext,
    )
    env.globals.update(i18n.jinja_globals())
    env.globals["csrf_token"] = auth.csrf_token
    env.globals["limits"] = limits  # the generation limits, as the API and agents enforce them
    env.globals["has_viewer_copy"] = compact.has_copy  # a model's compressed copy for the viewer
    env.filters.update(formats.FILTERS)
    env.filters.update(labels.FILTERS)
    return Jinja2Templates(env=env)


def session_lifetime(request: Request) -> login_sessions.Lifetime:
    settings = farm_of(request).settings
    return login_sessions.Lifetime(settings.session_idle_s, settings.session_max_age_s)


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
    else:
        i18n.activate(user.locale)
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
        raise HTTPException(403, gettext("This page is for administrators."))
    return user


def locale_of(request: Request, user: models.User | None) -> str:
    """The language to answer ``request`` in (see :func:`coordinator.i18n.negotiate`)."""
    return i18n.negotiate(
        user.locale if user is not None else None,
        request.cookies.get(i18n.COOKIE),
        request.headers.get("accept-language"),
        request.url.path,
    )


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def page_values(farm: Farm) -> dict[str, Any]:
    """What any page may show of the farm, as plain values: templates never get the
    farm itself (its state is the farm's to change, docs/architecture.md)."""
    return {
        "now": farm.clock(),
        "mail_enabled": farm.settings.mail_enabled,
        "notify_after_s": farm.settings.notify_after_s,
        "agents_online": farm.agents_online(),
        "describe": functools.partial(jobs.describe_progress, farm),
    }


def render(
    request: Request,
    template: str,
    user: models.User | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    if user is not None:
        # The middleware chose from the cookie and Accept-Language; a saved choice wins.
        i18n.activate(user.locale)
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, **page_values(farm_of(request)), **context},
        status_code=status_code,
    )
    # Views answer htmx with a partial and a navigation with the page, at one URL: a
    # cache (the browser's, on Back) must not hand one out for the other; the language
    # comes from the cookie or Accept-Language.
    response.headers["Vary"] = "HX-Request, Cookie, Accept-Language"
    return response


def stream_session_key(request: Request) -> str | None:
    """A stable, non-secret name for the browser's login session (streams are capped
    per session); None for a visitor who is not logged in."""
    token = auth.session_token(request)
    return hashlib.sha256(token.encode()).hexdigest()[:32] if token else None


class _LimitedStream(StreamingResponse):
    """A stream that gives its slot back however it ends (done, disconnect, error)."""

    def __init__(self, events: AsyncIterator[str], slot: StreamSlot) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


def sse_response(
    request: Request, user: models.User | None, events: Callable[[], AsyncIterator[str]]
) -> Response:
    """A Server-Sent Events stream under the stream caps (429 beyond them); nginx must
    not buffer it, browsers must not cache it.

    ``events`` is called only once a slot is granted. A refusal closes the
    connection, so it holds no socket; browsers' EventSource gives up on a 429."""
    limiter: StreamLimiter = request.app.state.streams
    try:
        slot = limiter.acquire(
            stream_session_key(request), user.id if user else None, client_ip(request)
        )
    except StreamLimitError as exc:
        return PlainTextResponse(
            str(exc),
            status_code=429,
            headers={"Connection": "close", "Retry-After": "60", "Cache-Control": "no-store"},
        )
    return _LimitedStream(events(), slot)


MAX_NEXT = 2000
# Printable ASCII but the backslash: browsers read a backslash as "/" and drop tabs
# and newlines from URLs, so "/<backslash>evil" or "/<tab>/evil" name another host.
_SAFE_PATH = re.compile(r"^/(?![/\\])[\x21-\x5b\x5d-\x7e]*$")
# The same after percent-decoding (for whoever decodes it next), spaces and UTF-8 allowed.
_UNSAFE_DECODED = re.compile(r"^/[/\\]|[\\\x00-\x1f\x7f]")


def safe_next(raw: object) -> str:
    """Where to go after logging in: a same-site path, or "/".

    The one sanitiser for every redirect built from a request (the login page,
    the login form, htmx's HX-Redirect, login_redirect). The percent-decoded form
    is checked too, so "/%5Cevil" is refused as well as "/\\evil"."""
    if not isinstance(raw, str) or len(raw) > MAX_NEXT or not _SAFE_PATH.match(raw):
        return "/"
    if _UNSAFE_DECODED.search(unquote(raw)):
        return "/"
    parts = urlsplit(raw)
    return "/" if parts.scheme or parts.netloc else raw


def redirect(request: Request, url: str) -> Response:
    """A redirect that also works for htmx requests (full page navigation).

    ``url`` is the view's own: anything taken from the request goes through
    :func:`safe_next` first."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def login_redirect(request: Request) -> Response:
    path = quote(request.url.path, safe="/:@!$&'()*+,;=-._~")
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(request, f"/login?next={quote(safe_next(target), safe='')}")
