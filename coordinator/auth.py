"""Passwords, sessions, CSRF and rate limits."""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from coordinator import models

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so that a login for an
# unknown name costs the same time as one with a wrong password.
_DUMMY_HASH = _hasher.hash("not a real password")

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{2,}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256


class AuthError(Exception):
    """A credential problem; the message is safe to show (no user enumeration)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str, username: str = "") -> str | None:
    """Why a new password is too weak, or None."""
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use at most {MAX_PASSWORD} characters."
    if username and username.lower() in password.lower():
        return "The password must not contain the username."
    if len(set(password)) < 5:
        return "The password is too repetitive."
    return None


# -- sessions ---------------------------------------------------------------


def login_session(request: Request, user: models.User) -> None:
    """Start a fresh session (rotation: nothing of the old one survives)."""
    request.session.clear()
    request.session.update(
        {"uid": user.id, "sv": user.session_version, "csrf": secrets.token_urlsafe(32)}
    )


def logout_session(request: Request) -> None:
    request.session.clear()


def session_user_id(request: Request) -> tuple[int, int] | None:
    uid, version = request.session.get("uid"), request.session.get("sv")
    if isinstance(uid, int) and isinstance(version, int):
        return uid, version
    return None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request without the session's CSRF token.

    htmx sends it as the ``X-CSRF-Token`` header (set once on <body>); plain
    forms as the hidden ``csrf_token`` field.
    """
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(
            403, "The form expired or did not come from this site. Reload and retry."
        )


# -- rate limits ------------------------------------------------------------


@dataclass
class RateLimiter:
    """Sliding-window limit per key (client address + action), in memory."""

    limit: int
    window_s: float = 60.0

    def __post_init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 100_000:  # bound memory under a spray of addresses
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window_s}
        return True


def new_token(prefix: str) -> tuple[str, str]:
    """A random secret shown once, and the SHA-256 hex stored in its place."""
    import hashlib

    secret = secrets.token_urlsafe(32)
    return f"{prefix}{secret}", hashlib.sha256(secret.encode()).hexdigest()
