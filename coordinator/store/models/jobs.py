"""Jobs, their results and declines, agents, and the gallery's likes and reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from sqlalchemy.orm import Mapped, mapped_column, relationship

from coordinator.store.models.base import Base, fold

if TYPE_CHECKING:
    from coordinator.store.models.accounts import User


def _folded_prompt(context: DefaultExecutionContext) -> str:
    return fold(str(context.get_current_parameters()["prompt"]))  # type: ignore[no-untyped-call]


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


class JobMailOutbox(Base):
    """A finished job whose "your model is ready" mail has not gone out yet
    (``coordinator.services.job_mail``): written with the job's end for an owner who
    asked for such mail, retried while the mail server refuses, deleted once sent or
    given up. ``claim``/``claimed_until``: see ``coordinator.services.outbox``."""

    __tablename__ = "job_mail_outbox"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)
    next_at: Mapped[float] = mapped_column(Float, index=True)
    claim: Mapped[str | None] = mapped_column(String(32), default=None)
    claimed_until: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


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


class DeletedJob(Base):
    """A job its owner deleted: kept (without prompt or files) only so it still counts
    towards the daily quota; rows older than a day are pruned on the next delete."""

    __tablename__ = "deleted_jobs"
    __table_args__ = (Index("ix_deleted_user_created", "user_id", "created_at"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    deleted_at: Mapped[float] = mapped_column(Float)


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
