"""Database tables (SQLAlchemy 2 typed ORM).

Times are UTC epoch seconds (floats): they compare and sort the same in SQLite
and PostgreSQL and feed the pure scheduler directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

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
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def fold(text: str) -> str:
    """Text as search compares it: Unicode case folding ("СТУЛ" and "стул" match), done
    in Python because SQLite's LIKE folds ASCII only and PostgreSQL's depends on the
    database's locale."""
    return text.casefold()


def _folded_prompt(context: DefaultExecutionContext) -> str:
    return fold(str(context.get_current_parameters()["prompt"]))  # type: ignore[no-untyped-call]


class Base(DeclarativeBase):
    pass


B = TypeVar("B", bound=Base)


def loaded(cls: type[B], values: Mapping[str, Any]) -> B:
    """A detached ``cls`` holding a row's column values, as a query would load it: the
    values go straight into the instance's dict (the constructor's change events for
    every column cost 30 times more). For rows read, or written, through Core (never
    added to a session), keyed by column keys (unchecked: no typos)."""
    obj: B = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    return obj


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


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_created", "user_id", "created_at"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_gallery", "public", "hidden", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(Text)
    # fold(prompt), kept by whoever writes the prompt (the default covers ORM inserts).
    prompt_folded: Mapped[str] = mapped_column(Text, default=_folded_prompt)
    seed: Mapped[int] = mapped_column(BigInteger)  # 0 .. 2**32-1: past int32
    guidance: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64), default="shap-e")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # Attempt numbers only grow, so (job, attempt) names one assignment forever;
    # an admin requeue gives fresh tries by moving ``attempt_base`` up instead.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    attempt_base: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    agent_id: Mapped[str | None] = mapped_column(String(32), default=None)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Hidden by a moderator: out of the gallery, the creator page and public view; its
    # owner (and admins) still see it, marked as hidden.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    # How many users like it: kept equal to its rows in ``likes`` (recounted in the
    # transaction that changes them) so the gallery can sort by it.
    like_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    enqueued_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The "your job finished" e-mail went out (claimed atomically: at most one per job).
    notified_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The API key that submitted it (its webhook is told when the job ends); no FK: a
    # revoked key leaves its jobs alone.
    api_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # Its own webhook URL, given with the API submission (migration 0012_job_webhooks):
    # told when it ends, signed with that key's webhook secret.
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    # -- image-to-3D (migration 0010_job_images) ----------------------------------------
    # An image job's input: our PNG re-encoding of the upload, stored as the blob
    # ``<id>.input.png``; its sha256 and size go to the agent with the assign. NULL for
    # text jobs (``kind`` is derived from it); ``prompt`` is then an optional caption.
    image_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    image_size: Mapped[int | None] = mapped_column(Integer, default=None)
    image_width: Mapped[int | None] = mapped_column(Integer, default=None)
    image_height: Mapped[int | None] = mapped_column(Integer, default=None)
    # Mesh options (protocol.MeshOptions): decimate to about this many faces (None: as
    # generated); "for 3D printing": the STL download is repaired to be watertight.
    mesh_target_faces: Mapped[int | None] = mapped_column(Integer, default=None)
    mesh_printable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    user: Mapped[User] = relationship(lazy="raise")
    result: Mapped[Result | None] = relationship(back_populates="job", lazy="raise")

    @property
    def kind(self) -> str:
        """``image`` for an image-to-3D job, else ``text``."""
        return "text" if self.image_sha256 is None else "image"

    def __init__(self, **values: Any) -> None:
        # Jobs are inserted with Core from their attributes (farm.lifecycle.create),
        # where an unset attribute is None, not the column default.
        values.setdefault("mesh_printable", False)
        super().__init__(**values)


class JobDecline(Base):
    """An agent whose owner's blocklist refused the job: it is never offered the job
    again (the farm's queue reads these when it loads or refreshes a queued job)."""

    __tablename__ = "job_declines"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class Result(Base):
    """The stored model of a succeeded job; one per job, whatever the attempt."""

    __tablename__ = "results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str | None] = mapped_column(String(32))
    glb_size: Mapped[int] = mapped_column(Integer)
    glb_sha256: Mapped[str] = mapped_column(String(64))
    has_preview: Mapped[bool] = mapped_column(Boolean, default=False)
    vertices: Mapped[int] = mapped_column(Integer, default=0)
    faces: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    # For a "for 3D printing" job: whether its repaired STL is watertight (None: the
    # job did not ask for printing). Faces as the agent sent them, when the
    # coordinator decimated them further (an agent older than protocol v3).
    watertight: Mapped[bool | None] = mapped_column(Boolean, default=None)
    faces_received: Mapped[int | None] = mapped_column(Integer, default=None)

    job: Mapped[Job] = relationship(back_populates="result", lazy="raise")


class Agent(Base):
    """An enrolled GPU agent; its token is stored only as a SHA-256 hash."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64))
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # Drained by an admin: takes no new work, across reconnects and restarts, until resumed.
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float | None] = mapped_column(Float, default=None)
    gpu_name: Mapped[str] = mapped_column(String(200), default="")
    vram_mb: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[str] = mapped_column(String(200), default="")
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


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


class DeletedJob(Base):
    """A job its owner deleted: kept (without prompt or files) only so it still counts
    towards the daily quota; rows older than a day are pruned on the next delete."""

    __tablename__ = "deleted_jobs"
    __table_args__ = (Index("ix_deleted_user_created", "user_id", "created_at"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    deleted_at: Mapped[float] = mapped_column(Float)


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


class Like(Base):
    """One user likes one public model; at most once (the primary key)."""

    __tablename__ = "likes"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[float] = mapped_column(Float)


class Report(Base):
    """A user's report of a public model, waiting in the moderation queue until an admin
    hides the model or dismisses the report."""

    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_open", "resolved_at", "created_at"),
        Index("ix_reports_reporter", "reporter_id", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    reporter_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, default=None)
    resolution: Mapped[str | None] = mapped_column(String(16), default=None)  # hidden, dismissed


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


class Replica(Base):
    """A coordinator process sharing this PostgreSQL database (replica mode); one whose
    heartbeat stops is reaped by the first other replica that notices."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class AgentPresence(Base):
    """The replica that holds an agent's socket (and its leases), with what the leader
    plans with. ``connected`` false: the socket is gone but the replica still holds the
    agent's leases (its reconnect grace); the row goes when they end."""

    __tablename__ = "agent_presence"

    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    replica_id: Mapped[str] = mapped_column(String(32), index=True)
    connected: Mapped[bool] = mapped_column(Boolean)
    approved: Mapped[bool] = mapped_column(Boolean)
    # Approved, not paused by its owner, not being cut off (drains are agents.draining).
    available: Mapped[bool] = mapped_column(Boolean)
    models: Mapped[str] = mapped_column(Text)  # JSON list of model names
    max_batch: Mapped[int] = mapped_column(Integer)
    max_steps: Mapped[int] = mapped_column(Integer)
    preferred_users: Mapped[str] = mapped_column(Text)  # JSON list of user ids
    updated_at: Mapped[float] = mapped_column(Float)


class ReplicaLeadership(Base):
    """One row: the fencing epoch of the dispatching leader. A new leader raises it; a
    claim checks it under a row lock, so a deposed leader's late claim fails, and stores
    the fair-share state with the claim."""

    __tablename__ = "replica_leadership"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    replica_id: Mapped[str] = mapped_column(String(32))
    since: Mapped[float] = mapped_column(Float)
    # The scheduler's FairState after the last claim (JSON): a new leader goes on from it.
    fair_state: Mapped[str | None] = mapped_column(Text, default=None)
