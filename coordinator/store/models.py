"""Database tables (SQLAlchemy 2 typed ORM).

Times are UTC epoch seconds (floats): they compare and sort the same in SQLite
and PostgreSQL and feed the pure scheduler directly.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


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


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_created", "user_id", "created_at"),
        Index("ix_jobs_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(Text)
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
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    enqueued_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The API key that submitted it (its webhook is told when the job ends); no FK: a
    # revoked key leaves its jobs alone.
    api_key_id: Mapped[str | None] = mapped_column(String(32), default=None)

    user: Mapped[User] = relationship(lazy="raise")
    result: Mapped[Result | None] = relationship(back_populates="job", lazy="raise")


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


class DeletedJob(Base):
    """A job its owner deleted: kept (without prompt or files) only so it still counts
    towards the daily quota; rows older than a day are pruned on the next delete."""

    __tablename__ = "deleted_jobs"
    __table_args__ = (Index("ix_deleted_user_created", "user_id", "created_at"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    deleted_at: Mapped[float] = mapped_column(Float)
