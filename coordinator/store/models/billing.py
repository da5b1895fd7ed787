"""Subscriptions, the payment provider's events, vouchers."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from coordinator.store.models.base import Base


class Subscription(Base):
    """What a user pays for (or redeemed): one record per user, kept after it ends.

    ``status``: active, past_due (a renewal failed; the grace period runs),
    cancelled (ended early) or expired (ran out). ``tier`` is what the paid period
    gives; ``pending_tier`` a downgrade that starts with the next period.
    ``provider`` is "stripe" (or another provider's name), "voucher" or "admin";
    the provider ids tie webhooks to the record. ``event_at`` is the provider time
    of the newest event applied, so an older one delivered late changes nothing.
    The scheduler's tier is computed from this by services.entitlement.
    """

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True, index=True
    )
    tier: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    current_period_end: Mapped[float | None] = mapped_column(Float, default=None)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    pending_tier: Mapped[str | None] = mapped_column(String(32), default=None)
    provider: Mapped[str] = mapped_column(String(32), default="")
    provider_customer_id: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    provider_subscription_id: Mapped[str | None] = mapped_column(
        String(255), default=None, index=True
    )
    event_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SubscriptionEvent(Base):
    """A line of a user's payment and subscription history (shown on the profile)."""

    __tablename__ = "subscription_events"
    __table_args__ = (
        Index("ix_subscription_events_user_at", "user_id", "at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(32), default="")
    amount: Mapped[str] = mapped_column(String(32), default="")  # e.g. "4.90 EUR"
    detail: Mapped[str] = mapped_column(String(200), default="")


class ProviderEvent(Base):
    """A webhook event already handled, by the provider's event id: a replay is a no-op."""

    __tablename__ = "provider_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # "<provider>:<event id>"
    kind: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[float] = mapped_column(Float, index=True)
    outcome: Mapped[str] = mapped_column(String(200), default="")


class Voucher(Base):
    """A code an admin hands out for ``days`` of ``tier``; only its SHA-256 is stored."""

    __tablename__ = "vouchers"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # the last characters, for the admin list
    tier: Mapped[str] = mapped_column(String(32))
    days: Mapped[float] = mapped_column(Float)
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    note: Mapped[str] = mapped_column(String(200), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[float] = mapped_column(Float)


class VoucherRedemption(Base):
    """One user's use of one voucher; the primary key allows one per user per code."""

    __tablename__ = "voucher_redemptions"

    voucher_id: Mapped[int] = mapped_column(
        ForeignKey("vouchers.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    at: Mapped[float] = mapped_column(Float)
