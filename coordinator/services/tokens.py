"""Bearer secrets of every kind, one scheme: ``<prefix><id>.<secret>``.

Agent tokens (``sfa.``), API keys (``sfk.``) and login sessions (no prefix) are all
a public id, which finds the record, and a random secret, of which only the
SHA-256 is stored. The secret is shown once; a leaked database reveals none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

AGENT_PREFIX = "sfa."
API_KEY_PREFIX = "sfk."
MAX_TOKEN_CHARS = 256  # longer input is refused before any work


@dataclass(frozen=True)
class Issued:
    id: str
    secret_hash: str
    token: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class Presented:
    """A token as presented: the id finds the record, the secret is checked against it."""

    id: str
    secret: str


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(prefix: str = "", id_bytes: int = 9) -> Issued:
    """A new random id and secret; the token is ``<prefix><id>.<secret>``."""
    token_id, secret = secrets.token_urlsafe(id_bytes), secrets.token_urlsafe(32)
    return Issued(token_id, secret_hash(secret), f"{prefix}{token_id}.{secret}")


def parse(token: str, prefix: str = "") -> Presented | None:
    """``<prefix><id>.<secret>`` → its id and secret; None for anything else."""
    if len(token) > MAX_TOKEN_CHARS or not token.startswith(prefix):
        return None
    token_id, dot, secret = token[len(prefix) :].partition(".")
    if not dot or not token_id or not secret or "." in secret:
        return None
    return Presented(token_id, secret)


def matches(stored_hash: str, secret: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(stored_hash, secret_hash(secret))
