"""Views of the mail links: "Forgot password?", the reset form, address verification,
and the profile's e-mail settings (address, finished-job e-mails)."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator import i18n
from coordinator.i18n import gettext as _
from coordinator.request_context import client_ip, farm_of
from coordinator.services import account_mail, auth
from coordinator.services.mailer import Mailer
from coordinator.web.base import current_user, redirect, render, require_user


def _mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    if not mailer.enabled:
        raise HTTPException(
            404,
            _(
                "This farm sends no e-mail. An administrator can set a new password "
                "with `shapefarm admin reset-password`."
            ),
        )
    return mailer


async def _allowed(request: Request, address: str) -> bool:
    """Within the hourly limits of mails per client address and per e-mail address."""
    per_ip: auth.Limiter
    per_address: auth.Limiter
    per_ip, per_address = request.app.state.mail_limits
    return await per_ip.hit(client_ip(request)) and await per_address.hit(address)


def _private(response: Response) -> Response:
    # The page's URL holds the token: keep it out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# -- forgot / reset ---------------------------------------------------------


async def forgot_page(request: Request) -> Response:
    _mailer(request)
    return render(request, "forgot_password.html")


async def forgot(request: Request) -> Response:
    mailer = _mailer(request)
    await auth.check_csrf(request)
    form = await request.form()
    raw = str(form.get("email") or "")[:300]
    address = account_mail.normalise_address(raw)
    if address is None:
        error = _("That e-mail address does not look right.")
        return render(request, "forgot_password.html", error=error, email=raw, status_code=400)
    if not await _allowed(request, address):
        error = _("Too many reset requests. Wait an hour and retry.")
        return render(request, "forgot_password.html", error=error, email=raw, status_code=429)
    farm, lang = farm_of(request), i18n.current()
    # The look-up and the mail happen in the background: the answer, and how long
    # it takes, are the same whether or not an account has this address.
    mailer.submit(
        lambda: account_mail.send_reset(farm.sessions, mailer, address, lang, farm.clock),
        "password reset mail",
    )
    return render(request, "forgot_password.html", sent=address)


async def reset_page(request: Request) -> Response:
    _mailer(request)
    token = request.query_params.get("token", "")
    farm = farm_of(request)
    async with farm.sessions() as db:
        try:
            user = await account_mail.reset_target(db, token, farm.clock())
        except account_mail.MailTokenError as exc:
            return _private(render(request, "reset_password.html", error=str(exc), status_code=400))
        return _private(render(request, "reset_password.html", token=token, who=user.username))


async def reset(request: Request) -> Response:
    _mailer(request)
    await auth.check_csrf(request)
    form = await request.form()
    token = str(form.get("token") or "")
    farm = farm_of(request)
    async with farm.sessions() as db:
        try:
            await account_mail.reset_password(
                db,
                token,
                str(form.get("new_password") or ""),
                str(form.get("new_password2") or ""),
                farm.clock(),
            )
        except account_mail.MailTokenError as exc:
            context: dict[str, Any] = {"error": str(exc)}
            with contextlib.suppress(account_mail.MailTokenError):
                # A weak password, say: the same link may try again.
                who = await account_mail.reset_target(db, token, farm.clock())
                context.update(token=token, who=who.username)
            return _private(render(request, "reset_password.html", status_code=400, **context))
    auth.logout_session(request)  # this browser logs in again, with the new password
    return redirect(request, "/login?reset=1")


# -- address verification -----------------------------------------------------


async def verify_page(request: Request) -> Response:
    _mailer(request)
    token = request.query_params.get("token", "")
    farm = farm_of(request)
    async with farm.sessions() as db:
        viewer = await current_user(request, db)
        try:
            who, address = await account_mail.verify_target(db, token, farm.clock())
        except account_mail.MailTokenError as exc:
            page = render(request, "verify_email.html", viewer, error=str(exc), status_code=400)
            return _private(page)
        page = render(
            request, "verify_email.html", viewer, token=token, who=who.username, address=address
        )
        return _private(page)


async def verify(request: Request) -> Response:
    _mailer(request)
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    async with farm.sessions() as db:
        viewer = await current_user(request, db)
        try:
            token = str(form.get("token") or "")
            user = await account_mail.confirm_address(db, token, farm.clock())
        except account_mail.MailTokenError as exc:
            page = render(request, "verify_email.html", viewer, error=str(exc), status_code=400)
            return _private(page)
        return _private(render(request, "verify_email.html", viewer, done=True, address=user.email))


# -- the profile's e-mail settings ---------------------------------------------


async def change_address(request: Request) -> Response:
    """Send a verification link to a new address; it becomes the account's once followed."""
    mailer = _mailer(request)
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        address = account_mail.normalise_address(str(form.get("email") or "")[:300])
        if not auth.verify_password(user.password_hash, str(form.get("password") or "")):
            outcome = "password"
        elif address is None:
            outcome = "address"
        elif address == user.email and user.email_verified_at is not None:
            outcome = "same"
        elif not await _allowed(request, address):
            outcome = "limit"
        else:
            user_id, lang = user.id, i18n.current()
            mailer.submit(
                lambda: account_mail.send_verification(
                    farm.sessions, mailer, user_id, address, farm.clock, lang
                ),
                "address verification mail",
            )
            outcome = "sent"
    return redirect(request, f"/profile?mail={outcome}#mail")


async def notify_setting(request: Request) -> Response:
    """Turn the finished-job e-mails on or off (on needs a proven address)."""
    await auth.check_csrf(request)
    form = await request.form()
    wanted = form.get("notify_email") == "on"
    if wanted:
        _mailer(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        if wanted and (not user.email or user.email_verified_at is None):
            return redirect(request, "/profile?mail=unverified#mail")
        user.notify_email = wanted
        await db.commit()
    return redirect(request, f"/profile?mail={'notify-on' if wanted else 'notify-off'}#mail")


ROUTES = [
    Route("/forgot-password", forgot_page, methods=["GET"]),
    Route("/forgot-password", forgot, methods=["POST"]),
    Route("/reset-password", reset_page, methods=["GET"]),
    Route("/reset-password", reset, methods=["POST"]),
    Route("/verify-email", verify_page, methods=["GET"]),
    Route("/verify-email", verify, methods=["POST"]),
    Route("/profile/email", change_address, methods=["POST"]),
    Route("/profile/notifications", notify_setting, methods=["POST"]),
]
