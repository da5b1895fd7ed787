"""Accounts: users, their sessions, API keys with their webhook log and outbox, mail
tokens, rate limits, the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from coordinator.store.models.base import Base

if TYPE_CHECKING:
    from coordinator.store.models.billing import Subscription


class User(Base):
    __tablename__ = "users"
    # AUTOINCREMENT: SQLite would otherwise hand a deleted user's id to the next
    # account, and with it anything still naming that id (PostgreSQL's sequences
    # never go back).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True, default=None)
    password_hash: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    tier: Mapped[str] = mapped_column(String(32), default="free")
    tier_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    credit: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    # The UI language the user chose (a catalog name such as "ru"); None: no choice.
    locale: Mapped[str | None] = mapped_column(String(16), default=None)
    # Loaded with the user (one join): the effective tier is computed from it.
    subscription: Mapped[Subscription | None] = relationship(
        lazy="joined", viewonly=True, uselist=False
    )
    # When ``email`` was proven by a link (None: not proven, so no mail but the
    # verification link itself goes there).
    email_verified_at: Mapped[float | None] = mapped_column(Float, default=None)
    # An e-mail when a job that waited long finishes (see services.job_mail).
    notify_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}  # entry ids are never reused either

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer, default=None)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class LoginSession(Base):
    """A browser's login: the signed cookie names it by ``id`` and carries a secret
    stored here only as a SHA-256, so logout, ban and deletion end it for good."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float, index=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class ApiKey(Base):
    """A per-user key for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Told (signed with the secret, HMAC-SHA256) when a job submitted with this key ends.
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    webhook_secret: Mapped[str | None] = mapped_column(String(64), default=None)


class WebhookDelivery(Base):
    """One webhook delivery (after its last attempt), for the log on the profile."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_key_id", "api_key_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2000))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    at: Mapped[float] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # Sent to the job's own URL (given with its submission), not the key's.
    per_job: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WebhookOutbox(Base):
    """Webhook work not done yet, kept until it is (``coordinator.services.api_webhooks``).

    A job's end adds a row with no ``url`` in the transaction that ends it (only for a
    job submitted with a key that has a webhook, or with a URL of its own); a worker
    turns it into one row per URL to call, each sent, retried after ``next_at`` and
    deleted when logged. ``claim``/``claimed_until``: the process working on a row
    (another takes it over once that time has passed, e.g. after a crash)."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        Index("ix_webhook_outbox_next_at", "next_at"),
        Index("ix_webhook_outbox_key_id", "api_key_id"),
        # The keys with an attempt in flight, looked up by every claim.
        Index("ix_webhook_outbox_claimed_until", "claimed_until"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # Set on a delivery (None: a job's end not yet turned into deliveries).
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), default=None
    )
    url: Mapped[str | None] = mapped_column(String(2000), default=None)
    per_job: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    delivery_id: Mapped[str | None] = mapped_column(String(32), default=None)
    body: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)
    next_at: Mapped[float] = mapped_column(Float)
    claim: Mapped[str | None] = mapped_column(String(32), default=None)
    claimed_until: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class MailToken(Base):
    """A password-reset or address-verification link (see services.tokens for the
    scheme); only the SHA-256 of its secret is stored, and it works once."""

    __tablename__ = "mail_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # "reset" or "verify"
    secret_hash: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254))  # where the link was sent
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, default=None)


class RateHit(Base):
    """Hits of one rate-limit key (its SHA-256) in one fixed window; PostgreSQL replicas
    share these (SQLite keeps its counters in memory). ``limiter`` names the limit,
    ``window`` is ``floor(epoch / window_s)``; rows of finished windows are pruned."""

    __tablename__ = "rate_hits"

    limiter: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)


class LoginFailure(Base):
    """Failed logins per account key (its SHA-256) since the last quiet spell (the shared form of
    ``services.auth.LoginThrottle``)."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[float] = mapped_column(Float, index=True)
