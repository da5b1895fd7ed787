"""Coordinator settings: the one place that reads ``SHAPEFARM_*`` environment variables.

CLI flags override the environment; the environment overrides the defaults.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from starlette.datastructures import Secret

PREFIX = "SHAPEFARM_"
PAYMENT_PROVIDERS = ("stripe", "")  # see coordinator/services/payments.py, make_provider
SMTP_TLS_MODES = ("none", "starttls", "tls")
BLOB_STORES = ("local", "s3")
MAX_PRESIGN_S = 7 * 86400.0  # S3 signs URLs for a week at most


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message names it."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""  # default: sqlite+aiosqlite in data_dir
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""  # e.g. https://farm.example.org, used in agent install instructions
    tiers_file: Path | None = None  # default: the tiers.toml shipped with the coordinator
    heartbeat_s: float = 10.0
    lease_s: float = 60.0
    reconnect_grace_s: float = 15.0  # how long a vanished agent's jobs wait for it to come back
    max_attempts: int = 3
    chunk_bytes: int = 256 * 1024
    max_result_bytes: int = 64 * 1024 * 1024
    max_frame_bytes: int = 1024 * 1024
    max_body_bytes: int = 64 * 1024
    # What one uploaded model may cost (see docs/security.md, "Untrusted models"):
    # vertices and faces count every instance a node draws.
    glb_max_vertices: int = 4_000_000
    glb_max_faces: int = 4_000_000
    glb_max_nodes: int = 1024
    glb_max_accessors: int = 1024
    glb_max_expansion: int = 8  # decoded size / file size (models under 32 MiB decoded pass)
    max_conversions: int = 2  # OBJ/STL/PLY conversions running at once
    secure_cookies: bool = False  # set behind TLS
    trusted_proxies: tuple[str, ...] = ()
    registration_open: bool = True
    auto_approve_admin_agents: bool = True
    auth_rate_per_minute: int = 10
    # A login session ends after this long unused, and this long after the login at most.
    session_idle_s: float = 14 * 86400.0
    session_max_age_s: float = 30 * 86400.0
    # Live-update streams (SSE) hold a socket each: capped per login session, per user,
    # per client address, and in all (0: a quarter of the process's RLIMIT_NOFILE); each
    # ends after stream_max_s and the browser reconnects (see docs/security.md).
    streams_per_session: int = 4
    streams_per_user: int = 8
    streams_per_address: int = 32
    streams_max: int = 0
    stream_max_s: float = 600.0
    # A connection must finish each request's headers within this long, or it is closed.
    header_timeout_s: float = 10.0
    # Connections + requests at once before uvicorn answers 503 (0: RLIMIT_NOFILE - 128).
    max_connections: int = 0
    # Subscriptions (docs/operations.md, "Subscriptions and payments"): after a failed
    # renewal the paid tier stays this long past the period end, then falls back to free.
    subscription_grace_s: float = 3 * 86400.0
    # The payment provider; without its keys paid plans show "not available".
    payment_provider: str = "stripe"
    stripe_secret_key: Secret = field(default_factory=lambda: Secret(""))
    stripe_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    stripe_api_base: str = ""  # blank: Stripe's own; tests point it at a local server
    # Wrong voucher codes one user (and one address) may try per hour.
    voucher_attempts_per_hour: int = 10
    # Outgoing mail (password reset, address verification, finished-job notices); no
    # smtp_host: no mail, and `shapefarm admin reset-password` is the way back in.
    smtp_host: str = ""
    smtp_port: int = 0  # 0: 25, 587 or 465 by smtp_tls
    smtp_tls: str = "starttls"  # none | starttls | tls (implicit TLS, "SMTPS")
    smtp_username: str = ""
    smtp_password: Secret = field(default_factory=lambda: Secret(""))
    mail_from: str = ""  # e.g. "shapefarm <noreply@farm.example.org>"
    smtp_timeout_s: float = 20.0
    reset_token_s: float = 3600.0  # a password-reset link works this long
    verify_token_s: float = 86400.0  # an address-verification link works this long
    # Reset and verification mails asked for, per address and per client address.
    mail_per_address_per_hour: int = 3
    mail_per_ip_per_hour: int = 10
    mail_queue_max: int = 200  # mails waiting to be sent at once; more are dropped (logged)
    # A finished job is worth an e-mail (to users who opted in) after waiting this long.
    notify_after_s: float = 300.0

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_host)

    @property
    def smtp_port_or_default(self) -> int:
        return self.smtp_port or {"none": 25, "starttls": 587, "tls": 465}[self.smtp_tls]

    # Where model files live (docs/operations.md, "Model storage"): "local" (the data
    # dir's models/) or "s3" (an S3-compatible bucket that every replica shares).
    blob_store: str = "local"
    s3_bucket: str = ""
    s3_endpoint: str = ""  # blank: AWS; e.g. http://127.0.0.1:9000 for MinIO
    s3_region: str = ""  # blank: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    s3_prefix: str = ""  # key prefix inside the bucket
    # Blank: the AWS_* environment variables (or the instance's role) are used.
    s3_access_key_id: str = ""
    s3_secret_access_key: Secret = field(default_factory=lambda: Secret(""))
    # 0: downloads stream through the coordinator; more: they redirect to a URL signed
    # for this many seconds (the viewer's inline GLB always streams).
    s3_presign_s: float = 0.0

    # Webhook URLs may name loopback, private, link-local or other non-public addresses
    # (off: a user could make the coordinator call into its own network; docs/security.md).
    webhooks_allow_private: bool = False

    # Replica mode (docs/operations.md, "Replicas"): several coordinator processes share
    # one PostgreSQL database; one leader dispatches. Off: one process owns the farm.
    replicas: bool = False
    replica_heartbeat_s: float = 2.0  # how often a replica says it is alive
    replica_dead_s: float = 10.0  # a replica silent this long is reaped (its agents' jobs requeued)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "shapefarm.db"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path}"

    def validate(self) -> Settings:
        if self.lease_s <= self.heartbeat_s:
            raise SettingsError(
                f"lease_s ({self.lease_s}) must exceed heartbeat_s ({self.heartbeat_s}), "
                "or every lease would expire between two heartbeats"
            )
        if not 1 <= self.max_attempts <= 100:
            raise SettingsError("max_attempts must be between 1 and 100")
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if not 0 < self.session_idle_s <= self.session_max_age_s:
            raise SettingsError("session_idle_s must be positive and at most session_max_age_s")
        if min(self.glb_max_vertices, self.glb_max_faces, self.max_conversions) < 1:
            raise SettingsError("glb_max_vertices, glb_max_faces and max_conversions must be >= 1")
        if self.chunk_bytes + 64 > self.max_frame_bytes:
            raise SettingsError("chunk_bytes must fit in max_frame_bytes")
        for name in ("streams_per_session", "streams_per_user", "streams_per_address"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.streams_max < 0 or self.max_connections < 0:
            raise SettingsError("streams_max and max_connections must be 0 (derived) or more")
        if not self.subscription_grace_s >= 0:
            raise SettingsError("subscription_grace_s must be 0 or more")
        if self.payment_provider not in PAYMENT_PROVIDERS:
            raise SettingsError(
                f"payment_provider must be one of {', '.join(PAYMENT_PROVIDERS)} (blank: none)"
            )
        if self.voucher_attempts_per_hour < 1:
            raise SettingsError("voucher_attempts_per_hour must be at least 1")
        if not self.stream_max_s > 0 or not self.header_timeout_s > 0:
            raise SettingsError("stream_max_s and header_timeout_s must be positive")
        self._validate_mail()
        self._validate_blob_store()
        self._validate_replicas()
        return self

    def _validate_replicas(self) -> None:
        if not self.replicas:
            return
        if not self.database_url.startswith("postgresql"):
            raise SettingsError("replicas needs a PostgreSQL database_url (postgresql+asyncpg://)")
        if not 0 < self.replica_heartbeat_s * 2 <= self.replica_dead_s:
            raise SettingsError(
                "replica_heartbeat_s must be positive and replica_dead_s at least twice as long"
            )

    def _validate_blob_store(self) -> None:
        if self.blob_store not in BLOB_STORES:
            raise SettingsError(f"blob_store must be one of {', '.join(BLOB_STORES)}")
        if not 0 <= self.s3_presign_s <= MAX_PRESIGN_S:
            raise SettingsError(f"s3_presign_s must be between 0 and {MAX_PRESIGN_S:g}")
        if self.blob_store != "s3":
            return
        if not self.s3_bucket:
            raise SettingsError("s3_bucket is required with blob_store=s3")
        if self.s3_endpoint and not self.s3_endpoint.startswith(("http://", "https://")):
            raise SettingsError("s3_endpoint must be an http:// or https:// URL")
        if bool(self.s3_access_key_id) != bool(str(self.s3_secret_access_key)):
            raise SettingsError("s3_access_key_id and s3_secret_access_key go together")

    def _validate_mail(self) -> None:
        if self.smtp_tls not in SMTP_TLS_MODES:
            raise SettingsError(f"smtp_tls must be one of {', '.join(SMTP_TLS_MODES)}")
        if not 0 <= self.smtp_port <= 65535:
            raise SettingsError(f"smtp_port {self.smtp_port} is not a TCP port")
        if min(self.reset_token_s, self.verify_token_s, self.smtp_timeout_s) <= 0:
            raise SettingsError("reset_token_s, verify_token_s and smtp_timeout_s must be positive")
        if min(self.mail_per_address_per_hour, self.mail_per_ip_per_hour, self.mail_queue_max) < 1:
            raise SettingsError(
                "mail_per_address_per_hour, mail_per_ip_per_hour and mail_queue_max must be >= 1"
            )
        if self.notify_after_s < 0:
            raise SettingsError("notify_after_s must be 0 or more")
        if not self.smtp_host:
            return
        if "@" not in self.mail_from or any(c in self.mail_from for c in "\r\n"):
            raise SettingsError("mail_from must be an address (smtp_host is set)")
        if not self.public_url.startswith(("http://", "https://")):
            # Links in mail are built from it, never from a request's Host header
            # (which whoever asks for a reset controls).
            raise SettingsError("public_url (http:// or https://) is needed to send mail links")
        if bool(self.smtp_username) != bool(str(self.smtp_password)):
            raise SettingsError("smtp_username and smtp_password go together")

    def with_secret(self) -> Settings:
        """A copy that has a secret key: the configured one, or one kept in the data dir."""
        if str(self.secret_key):
            return self
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        return replace(self, secret_key=Secret(path.read_text().strip()))


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def _words(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# A field's type (resolved, not its annotation text) -> how its environment variable is read.
PARSERS: dict[object, Callable[[str], object]] = {
    bool: _bool,
    int: int,
    float: float,
    str: str,
    Path: Path,
    Path | None: Path,
    Secret: Secret,
    tuple[str, ...]: _words,
}
FIELD_TYPES: dict[str, object] = get_type_hints(Settings)


def _convert(name: str, raw: str) -> object:
    parse = PARSERS[FIELD_TYPES[name]]  # every field has one: tests/coordinator/test_settings.py
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}{name.upper()}={raw!r}: {exc}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults ← ``SHAPEFARM_*`` environment ← explicit overrides (CLI flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(PREFIX + f.name.upper())
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return Settings(**values).validate()
