"""The profile's webhook forms: set or remove a key's webhook URL, make or replace its
signing secret (jobs' own webhook URLs need one), send a test."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext as _
from coordinator.request_context import farm_of
from coordinator.services import api_webhooks as webhooks
from coordinator.services import auth, outbound, webhook_keys
from coordinator.store import models
from coordinator.web.base import require_user
from coordinator.web.profile import _page


async def save(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    hooks = webhooks.of(request.app.state)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        url = str(form.get("url") or "")
        try:
            _key, secret = await webhook_keys.configure(
                db, hooks, user, request.path_params["key_id"], url
            )
        except LookupError:
            raise HTTPException(404, _("No such API key.")) from None
        except outbound.WebhookError as exc:
            return await _page(request, db, user, 400, webhook_message=str(exc), webhook_ok=False)
        await db.commit()
        message = _("Webhook saved.") if url.strip() else _("Webhook removed.")
        return await _page(
            request, db, user, new_webhook_secret=secret, webhook_message=message, webhook_ok=True
        )


async def new_secret(request: Request) -> Response:
    await auth.check_csrf(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        try:
            secret = await webhook_keys.replace_secret(db, user, request.path_params["key_id"])
        except LookupError:
            raise HTTPException(404, _("No such API key.")) from None
        await db.commit()
        return await _page(
            request,
            db,
            user,
            new_webhook_secret=secret,
            webhook_message=_(
                "New webhook secret made: it signs this key's deliveries from now on."
            ),
            webhook_ok=True,
        )


async def send_test(request: Request) -> Response:
    await auth.check_csrf(request)
    hooks = webhooks.of(request.app.state)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
        key = await db.get(models.ApiKey, request.path_params["key_id"])
        if key is None or key.user_id != user.id:
            raise HTTPException(404, _("No such API key."))
        outcome = await hooks.send_test(key)
        if outcome.ok:
            message = _("Test delivered: HTTP %(status)s.") % {"status": outcome.status_code}
        else:
            message = _("Test failed: %(error)s") % {"error": outcome.error}
        return await _page(request, db, user, webhook_message=message, webhook_ok=outcome.ok)


ROUTES = [
    Route("/profile/api-keys/{key_id}/webhook", save, methods=["POST"]),
    Route("/profile/api-keys/{key_id}/webhook/test", send_test, methods=["POST"]),
    Route("/profile/api-keys/{key_id}/webhook/secret", new_secret, methods=["POST"]),
]
