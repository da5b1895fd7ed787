"""Passwords, the session cookie, CSRF and rate limits."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from coordinator.i18n import gettext, ngettext

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
        return ngettext(
            "Use at least %(num)s character.", "Use at least %(num)s characters.", MIN_PASSWORD
        ) % {"num": MIN_PASSWORD}
    if len(password) > MAX_PASSWORD:
        return ngettext(
            "Use at most %(num)s character.", "Use at most %(num)s characters.", MAX_PASSWORD
        ) % {"num": MAX_PASSWORD}
    if username and username.lower() in password.lower():
        return gettext("The password must not contain the username.")
    if len(set(password)) < 5:
        return gettext("The password is too repetitive.")
    return None


# -- sessions ---------------------------------------------------------------
#
# The signed cookie holds the session record's token (see login_sessions), the
# CSRF token and the device marks of login_throttle_key; nothing about the user.

_KEPT = ("device", "known")  # survive logout and rotation: they describe the browser


def login_session(request: Request, token: str) -> None:
    """Point the cookie at a fresh session record (rotation: no old session state survives)."""
    kept = {key: request.session[key] for key in _KEPT if key in request.session}
    request.session.clear()
    request.session.update({**kept, "sid": token, "csrf": secrets.token_urlsafe(32)})


def logout_session(request: Request) -> None:
    kept = {key: request.session[key] for key in _KEPT if key in request.session}
    request.session.clear()
    request.session.update(kept)


def session_token(request: Request) -> str | None:
    token = request.session.get("sid")
    return token if isinstance(token, str) else None


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
            403, gettext("The form expired or did not come from this site. Reload and retry.")
        )


# -- rate limits ------------------------------------------------------------
# Views use the two protocols; the classes below keep their counters in this
# process's memory (SQLite: one process). ``services.shared_limits`` has the
# PostgreSQL forms that replicas share.


class Limiter(Protocol):
    async def hit(self, key: str) -> bool:
        """Count one attempt for ``key``; False when it is over the limit (not counted)."""
        ...


class FailureThrottle(Protocol):
    async def wait(self, key: str) -> float:
        """Seconds before an attempt for ``key`` may be checked; 0 when it may be now."""
        ...

    async def fail(self, key: str) -> None:
        """Count one failed attempt for ``key``."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the failures of ``key`` (after a successful attempt)."""
        ...


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

    async def hit(self, key: str) -> bool:
        return self.allow(key)


# Failures a throttle keeps beyond the free ones: the delay reaches its cap long before.
KEPT_FAILURES_BEYOND_FREE = 32


class LoginThrottle:
    """Growing delays for failed logins per account, so spreading guesses over many
    addresses gains nothing.

    Keyed on the lower-cased username whether or not it exists (the answer must
    not reveal which do). After ``free`` failures each further attempt waits
    ``2 ** (failures - free)`` seconds after the last failure, at most
    ``cap_s``; the failures are forgotten after ``window_s`` without one. A
    steady attacker gets about 12 guesses an hour, and a real user who walks
    into the wait is held up minutes, not locked out. An attempt during the
    wait is refused unchecked and does not count, so it cannot stretch the
    wait. In memory (one process); a database-backed class with the same three
    methods can take its place.
    """

    def __init__(
        self,
        free: int = 5,
        window_s: float = 900.0,
        cap_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.free, self.window_s, self.cap_s = free, window_s, cap_s
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        # Forgotten only after a quiet window: a steady attacker's delay stays at the cap.
        if failures and failures[-1] <= now - self.window_s:
            failures.clear()
        return failures

    def wait_s(self, key: str) -> float:
        """Seconds before a login for ``key`` may be checked; 0 when it may be now."""
        now = self.clock()
        failures = self._recent(key, now)
        if len(failures) < self.free:
            return 0.0
        delay = min(self.cap_s, 2.0 ** (len(failures) - self.free))
        return max(0.0, failures[-1] + delay - now)

    async def wait(self, key: str) -> float:
        return self.wait_s(key)

    async def fail(self, key: str) -> None:
        self.failed(key)

    def failed(self, key: str) -> None:
        now = self.clock()
        failures = self._recent(key, now)
        failures.append(now)
        # The delay reaches the cap long before this; older failures add nothing.
        while len(failures) > self.free + KEPT_FAILURES_BEYOND_FREE:
            failures.popleft()
        self._failures[key] = failures
        if len(self._failures) > self.max_keys:  # bound memory under a spray of names
            recent = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window_s}
            if len(recent) > self.max_keys:  # still too many: the longest quiet go first
                by_last = sorted(recent.items(), key=lambda item: item[1][-1])
                recent = dict(by_last[-(self.max_keys * 9 // 10) :])
            self._failures = recent

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    async def clear(self, key: str) -> None:
        self.succeeded(key)


MAX_KNOWN_ACCOUNTS = 10


def login_throttle_key(request: Request, username: str) -> str:
    """The throttle's key for a login: the account, or, from a browser that has logged
    into that account before, the account on that browser alone.

    Someone guessing a password from elsewhere then slows the account down for
    everyone except the browsers its owner already uses (the mark is in the
    signed cookie: it cannot be forged, only earned with the password).
    """
    name = username.lower()
    device, known = request.session.get("device"), request.session.get("known")
    if isinstance(device, str) and isinstance(known, list) and _mark(name) in known:
        return f"{name}@{device}"
    return name


def _mark(name: str) -> str:
    # The cookie is signed, not encrypted: it names the accounts by a hash only.
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def remember_login(request: Request, username: str) -> None:
    """Mark this browser as one that logged into ``username`` (see login_throttle_key)."""
    mark = _mark(username.lower())
    if not isinstance(request.session.get("device"), str):
        request.session["device"] = secrets.token_urlsafe(12)
    known = request.session.get("known")
    marks = (
        [m for m in known if isinstance(m, str) and m != mark] if isinstance(known, list) else []
    )
    request.session["known"] = [*marks, mark][-MAX_KNOWN_ACCOUNTS:]
