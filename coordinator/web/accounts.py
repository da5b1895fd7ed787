"""Registration, login and logout views."""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator import i18n
from coordinator.i18n import N_, gettext
from coordinator.request_context import client_ip, farm_of
from coordinator.services import account_mail, auth, login_sessions
from coordinator.services.mailer import Mailer
from coordinator.store import models
from coordinator.web import language
from coordinator.web.base import (
    current_user,
    redirect,
    render,
    require_user,
    safe_next,
    sign_in,
    sign_out,
)

GENERIC_LOGIN_ERROR = N_("Wrong username or password.")
SUSPENDED_LOGIN_ERROR = N_(
    "This account is suspended. If you think this is a mistake, contact the administrators."
)
TOO_MANY_ATTEMPTS = N_("Too many attempts. Wait a minute and retry.")


async def login_page(request: Request) -> Response:
    async with farm_of(request).sessions() as db:
        next_url = safe_next(request.query_params.get("next"))
        if await current_user(request, db) is not None:
            return redirect(request, next_url)
    return render(request, "login.html", next=next_url)


async def login(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    next_url = safe_next(form.get("next"))
    limiter: auth.Limiter = request.app.state.auth_limiter
    if not await limiter.hit(f"login:{client_ip(request)}"):
        return render(
            request,
            "login.html",
            error=gettext(TOO_MANY_ATTEMPTS),
            username=username,
            next=next_url,
            status_code=429,
        )
    throttle: auth.FailureThrottle = request.app.state.login_throttle
    key = auth.login_throttle_key(request, username)
    wait = await throttle.wait(key)
    if wait > 0:
        # Refused before the password is checked: a right one would get this answer too.
        return render(
            request,
            "login.html",
            error=i18n.ngettext(
                "Too many failed logins for this account. Wait %(num)s second and retry.",
                "Too many failed logins for this account. Wait %(num)s seconds and retry.",
                math.ceil(wait),
            )
            % {"num": math.ceil(wait)},
            username=username,
            next=next_url,
            status_code=429,
        )
    async with farm_of(request).sessions() as db:
        user = await db.scalar(
            select(models.User).where(func.lower(models.User.username) == username.lower())
        )
        ok = auth.verify_password(user.password_hash if user else None, password)
        if user is None or not ok:
            await throttle.fail(key)
            return render(
                request,
                "login.html",
                error=gettext(GENERIC_LOGIN_ERROR),
                username=username,
                next=next_url,
                status_code=400,
            )
        if user.banned:
            # Only someone who knows the password learns that the account is suspended.
            return render(
                request,
                "login.html",
                error=gettext(SUSPENDED_LOGIN_ERROR),
                username=username,
                next=next_url,
                status_code=403,
            )
        await throttle.clear(key)
        await sign_in(request, db, user)
        auth.remember_login(request, user.username)
        saved = user.locale
    response = redirect(request, next_url)
    if i18n.valid(saved):
        # The account's language outlives this session: logging out keeps it.
        language.remember(request, response, str(saved))
    return response


async def register_page(request: Request) -> Response:
    if not request.app.state.settings.registration_open:
        return render(request, "register.html", closed=True, status_code=403)
    return render(request, "register.html")


async def register(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    username = str(form.get("username") or "").strip()
    email = str(form.get("email") or "").strip().lower() or None
    password = str(form.get("password") or "")
    values = {"username": username, "email": email or ""}
    if not request.app.state.settings.registration_open:
        return render(request, "register.html", closed=True, status_code=403)
    limiter: auth.Limiter = request.app.state.auth_limiter
    if not await limiter.hit(f"register:{client_ip(request)}"):
        return render(
            request,
            "register.html",
            error=gettext(TOO_MANY_ATTEMPTS),
            values=values,
            status_code=429,
        )
    problem = None
    if not auth.USERNAME.match(username):
        problem = gettext("Usernames are 3–32 Latin letters, digits, dots, dashes or underscores.")
    elif email is not None and not auth.EMAIL.match(email):
        problem = gettext("That email address does not look right.")
    else:
        problem = auth.password_problem(password, username)
    if problem is None and password != str(form.get("password2") or ""):
        problem = gettext("The two passwords differ.")
    if problem:
        return render(request, "register.html", error=problem, values=values, status_code=400)
    farm = farm_of(request)
    async with farm.sessions() as db:
        taken = await db.scalar(
            select(models.User.id).where(
                (func.lower(models.User.username) == username.lower())
                | ((models.User.email == email) if email else False)
            )
        )
        if taken is None:
            user = models.User(
                username=username,
                email=email,
                password_hash=auth.hash_password(password),
                created_at=farm.clock(),
                # A language picked with the switcher before registering is kept.
                locale=i18n.valid(request.cookies.get(i18n.COOKIE)),
            )
            db.add(user)
            try:
                await db.commit()
            except IntegrityError:
                taken = -1
        if taken is not None:
            # Same answer whether the name or the address is taken.
            return render(
                request,
                "register.html",
                values=values,
                status_code=400,
                error=gettext("That username or email cannot be used. Choose another."),
            )
        await sign_in(request, db, user)
        auth.remember_login(request, user.username)
    if email is not None:
        send_verification_later(request, user.id, email)
    return redirect(request, "/")


def send_verification_later(request: Request, user_id: int, raw_address: str) -> None:
    """Mail the address typed at registration a link that proves it (when mail is on)."""
    mailer: Mailer = request.app.state.mailer
    address = account_mail.normalise_address(raw_address)  # one address, nothing more
    if mailer.enabled and address is not None:
        farm, lang = farm_of(request), i18n.current()
        mailer.submit(
            lambda: account_mail.send_verification(
                farm.sessions, mailer, user_id, address, farm.clock, lang
            ),
            "address verification mail",
        )


async def logout(request: Request) -> Response:
    await auth.check_csrf(request)
    async with farm_of(request).sessions() as db:
        await sign_out(request, db)
    return redirect(request, "/")


async def logout_everywhere(request: Request) -> Response:
    """End every session of the user, this one included."""
    await auth.check_csrf(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        await login_sessions.end_all(db, user.id)
        await db.commit()
    auth.logout_session(request)
    return redirect(request, "/login")


ROUTES = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/register", register_page, methods=["GET"]),
    Route("/register", register, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/logout/everywhere", logout_everywhere, methods=["POST"]),
]
