"""Admin console: subscriptions (filter by status, extend, cancel) and vouchers
(create, list, revoke); every change is audit-logged by the services."""

from __future__ import annotations

import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.request_context import MAX_PAGES, farm_of, int_param
from coordinator.services import auth, entitlement, payments, subscriptions, vouchers
from coordinator.store import models
from coordinator.web.base import redirect, render, require_admin
from coordinator.web.billing import payments_of

PAGE = 50
MAX_EXTEND_DAYS = 3650.0


def _number(raw: object, name: str, *, blank_ok: bool = False) -> float | None:
    text = str(raw or "").strip()
    if not text and blank_ok:
        return None
    try:
        value = float(text)
    except ValueError:
        raise HTTPException(422, f"{name} must be a number.") from None
    if not math.isfinite(value):
        raise HTTPException(422, f"{name} must be a number.")
    return value


async def subscriptions_page(request: Request) -> Response:
    farm = farm_of(request)
    status = request.query_params.get("status", "")
    if status and status not in entitlement.STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(entitlement.STATUSES)}.")
    page = int_param(request.query_params, "page", 1, 1, MAX_PAGES)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        rows, total = await subscriptions.listing(db, status, page, PAGE)
    return render(
        request,
        "admin/subscriptions.html",
        admin,
        rows=rows,
        total=total,
        status=status,
        statuses=entitlement.STATUSES,
        page=page,
        pages=max(1, -(-total // PAGE)),
    )


async def _subscription(request: Request, action: str) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        await auth.check_csrf(request)
        form = await request.form()
        sub = await db.get(models.Subscription, request.path_params["sub_id"])
        if sub is None:
            raise HTTPException(404, "No such subscription.")
        try:
            if action == "extend":
                days = _number(form.get("days"), "Days")
                if days is None or not 0 < days <= MAX_EXTEND_DAYS:
                    raise HTTPException(422, f"Days must be between 0 and {MAX_EXTEND_DAYS:g}.")
                await subscriptions.extend(farm, db, sub, days, admin)
            else:
                await subscriptions.cancel_now(farm, db, sub, admin, payments_of(request))
        except subscriptions.SubscriptionError as exc:
            raise HTTPException(409, str(exc)) from None
        except payments.PaymentError as exc:
            raise HTTPException(502, str(exc)) from None
    return redirect(request, "/admin/subscriptions")


async def extend(request: Request) -> Response:
    return await _subscription(request, "extend")


async def cancel(request: Request) -> Response:
    return await _subscription(request, "cancel")


async def _vouchers_page(
    request: Request, admin: models.User, status_code: int = 200, **extra: object
) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        rows = await vouchers.listing(db)
    response = render(
        request,
        "admin/vouchers.html",
        admin,
        status_code=status_code,
        rows=rows,
        tiers=[t for t in farm.tiers.values() if t.name != "free"],
        **extra,
    )
    response.headers["Cache-Control"] = "no-store"  # it may show a new code
    return response


async def vouchers_page(request: Request) -> Response:
    async with farm_of(request).sessions() as db:
        admin = await require_admin(request, db)
    return await _vouchers_page(request, admin)


async def create_voucher(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        await auth.check_csrf(request)
        form = await request.form()
        try:
            uses = _number(form.get("uses") or "1", "Uses")
            spec = vouchers.NewVoucher(
                tier=str(form.get("tier") or ""),
                days=_number(form.get("days"), "Days") or 0.0,
                max_uses=int(uses) if uses is not None and uses == int(uses) else 0,
                valid_days=_number(form.get("valid_days"), "Valid days", blank_ok=True),
                note=str(form.get("note") or ""),
            )
            voucher, code = await vouchers.create(db, farm.tiers, spec, admin, farm.clock())
        except (vouchers.VoucherError, HTTPException) as exc:
            message = exc.detail if isinstance(exc, HTTPException) else str(exc)
            return await _vouchers_page(request, admin, 400, error=message)
    return await _vouchers_page(request, admin, 201, new_code=code, new_voucher=voucher)


async def revoke_voucher(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        admin = await require_admin(request, db)
        await auth.check_csrf(request)
        try:
            await vouchers.revoke(farm, db, request.path_params["voucher_id"], admin)
        except vouchers.VoucherError as exc:
            raise HTTPException(409, str(exc)) from None
    return redirect(request, "/admin/vouchers")


ROUTES = [
    Route("/admin/subscriptions", subscriptions_page),
    Route("/admin/subscriptions/{sub_id:int}/extend", extend, methods=["POST"]),
    Route("/admin/subscriptions/{sub_id:int}/cancel", cancel, methods=["POST"]),
    Route("/admin/vouchers", vouchers_page, methods=["GET"]),
    Route("/admin/vouchers", create_voucher, methods=["POST"]),
    Route("/admin/vouchers/{voucher_id:int}/revoke", revoke_voucher, methods=["POST"]),
]
