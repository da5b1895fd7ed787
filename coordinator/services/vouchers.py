"""Vouchers: codes an admin hands out for days of a tier; a user redeems one.

Codes are random (80 bits), shown once, stored as a SHA-256 only. A
redemption takes one use with a conditional UPDATE (``uses < max_uses``) and
inserts a (voucher, user) row whose primary key allows one per user per code,
both in one transaction: two users redeeming the last use at once get one
success and one "used up", whatever the database. Wrong codes are throttled
per user and per address (see web.billing).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.farm.engine import Farm
from coordinator.i18n import gettext as _
from coordinator.services import audit, subscriptions
from coordinator.services.subscriptions import DAY_S, SubscriptionError
from coordinator.store import models

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
GROUPS, GROUP_LEN = 4, 4  # 16 characters of 32: 80 bits
MAX_CODE_INPUT = 64
MAX_DAYS = 3650.0
MAX_USES = 100_000
MAX_NOTE = 200
PAGE = 100
_STRIP = re.compile(r"[\s-]+")


class VoucherError(ValueError):
    """A refused voucher action; the message is shown."""


@dataclass(frozen=True, slots=True)
class NewVoucher:
    tier: str
    days: float
    max_uses: int = 1
    valid_days: float | None = None  # the code can be redeemed for this long
    note: str = ""


def normalize(code: str) -> str:
    return _STRIP.sub("", code).upper()


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LEN))
    return "-".join(raw[i : i + GROUP_LEN] for i in range(0, len(raw), GROUP_LEN))


def check(spec: NewVoucher, tiers: Mapping[str, object]) -> None:
    if spec.tier not in tiers:
        raise VoucherError(f"Unknown tier {spec.tier!r}; choose one of {', '.join(tiers)}.")
    if spec.tier == "free":
        raise VoucherError("A voucher for the free tier gives nothing.")
    if not math.isfinite(spec.days) or not 0 < spec.days <= MAX_DAYS:
        raise VoucherError(f"Days must be between 0 and {MAX_DAYS:g}.")
    if not 1 <= spec.max_uses <= MAX_USES:
        raise VoucherError(f"Uses must be between 1 and {MAX_USES}.")
    if spec.valid_days is not None and (
        not math.isfinite(spec.valid_days) or not 0 < spec.valid_days <= MAX_DAYS
    ):
        raise VoucherError(f"Valid days must be between 0 and {MAX_DAYS:g} (blank: no expiry).")
    if len(spec.note) > MAX_NOTE:
        raise VoucherError(f"The note is longer than {MAX_NOTE} characters.")


async def create(
    db: AsyncSession,
    tiers: Mapping[str, object],
    spec: NewVoucher,
    actor: models.User | None,
    now: float,
) -> tuple[models.Voucher, str]:
    """Create (and commit) a voucher; returns it with its code, the only time it is seen.
    ``actor`` None: created from the CLI."""
    check(spec, tiers)
    code = new_code()
    voucher = models.Voucher(
        code_hash=code_hash(code),
        hint=code[-4:],
        tier=spec.tier,
        days=spec.days,
        max_uses=spec.max_uses,
        uses=0,
        expires_at=now + spec.valid_days * DAY_S if spec.valid_days is not None else None,
        note=spec.note.strip(),
        revoked=False,
        created_by=actor.id if actor is not None else None,
        created_at=now,
    )
    db.add(voucher)
    await db.flush()
    detail = f"{spec.tier} for {spec.days:g} days, {spec.max_uses} use(s); {voucher.note}"
    if actor is None:
        detail += " (via CLI)"
    audit.record(db, actor, "voucher.create", f"voucher {voucher.id} …{voucher.hint}", detail, now)
    await db.commit()
    return voucher, code


async def listing(db: AsyncSession) -> list[tuple[models.Voucher, str | None]]:
    rows = await db.execute(
        select(models.Voucher, models.User.username)
        .outerjoin(models.User, models.User.id == models.Voucher.created_by)
        .order_by(models.Voucher.id.desc())
        .limit(PAGE)
    )
    return [(voucher, name) for voucher, name in rows]


async def revoke(farm: Farm, db: AsyncSession, voucher_id: int, actor: models.User) -> None:
    voucher = await db.get(models.Voucher, voucher_id)
    if voucher is None:
        raise VoucherError("No such voucher.")
    if voucher.revoked:
        raise VoucherError("This voucher is already revoked.")
    voucher.revoked = True
    target = f"voucher {voucher.id} …{voucher.hint}"
    audit.record(db, actor, "voucher.revoke", target, "", farm.clock())
    await db.commit()


async def redeem(farm: Farm, db: AsyncSession, user: models.User, code: str) -> models.Subscription:
    """Use ``code`` for ``user``: one use taken, the tier granted, all or nothing."""
    if not code.strip() or len(code) > MAX_CODE_INPUT:
        raise VoucherError(_("This code is not valid."))
    now = farm.clock()
    voucher = await db.scalar(
        select(models.Voucher).where(models.Voucher.code_hash == code_hash(code))
    )
    if voucher is None or voucher.revoked:
        raise VoucherError(_("This code is not valid."))
    if voucher.expires_at is not None and now >= voucher.expires_at:
        raise VoucherError(_("This code has expired."))
    if voucher.tier not in farm.tiers:
        raise VoucherError(_("This code is for a plan that no longer exists."))
    # Kept: a rollback below expires the ORM objects.
    voucher_id, tier, days, user_id = voucher.id, voucher.tier, voucher.days, user.id
    if await _redeemed(db, voucher_id, user.id):
        raise VoucherError(_("You have already used this code."))
    if voucher.uses >= voucher.max_uses:
        raise VoucherError(_("This code has been used up."))
    try:
        sub = subscriptions.grant(
            db,
            user,
            await subscriptions.of_user(db, user.id),
            tier,
            days,
            "voucher",
            now,
            farm.settings.subscription_grace_s,
        )
    except SubscriptionError as exc:
        await db.rollback()
        raise VoucherError(str(exc)) from None
    try:
        await _take_use(db, voucher_id, user, tier, days, now)
    except IntegrityError:  # the same user redeeming twice at once
        await db.rollback()
        if await _redeemed(db, voucher_id, user_id):
            raise VoucherError(_("You have already used this code.")) from None
        raise VoucherError(_("The code could not be redeemed just now; try again.")) from None
    await subscriptions.refresh(farm, [user_id])
    return sub


async def _take_use(
    db: AsyncSession, voucher_id: int, user: models.User, tier: str, days: float, now: float
) -> None:
    """Take one use (by the database, not by what the request read) and commit."""
    taken = await db.execute(
        update(models.Voucher)
        .where(
            models.Voucher.id == voucher_id,
            models.Voucher.uses < models.Voucher.max_uses,
            models.Voucher.revoked.is_(False),
        )
        .values(uses=models.Voucher.uses + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        await db.rollback()
        raise VoucherError(_("This code has been used up."))
    db.add(models.VoucherRedemption(voucher_id=voucher_id, user_id=user.id, at=now))
    detail = f"{tier} for {days:g} days"
    audit.record(db, user, "voucher.redeem", f"voucher {voucher_id}", detail, now)
    await db.commit()


async def _redeemed(db: AsyncSession, voucher_id: int, user_id: int) -> bool:
    count = await db.scalar(
        select(func.count())
        .select_from(models.VoucherRedemption)
        .where(
            models.VoucherRedemption.voucher_id == voucher_id,
            models.VoucherRedemption.user_id == user_id,
        )
    )
    return bool(count)
