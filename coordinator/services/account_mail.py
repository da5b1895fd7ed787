"""Links sent by mail: password reset and e-mail address verification.

A link carries a token of the one scheme in :mod:`coordinator.services.tokens`
(``sfr.<id>.<secret>`` to reset, ``sfv.<id>.<secret>`` to verify); only the
secret's SHA-256 is stored. A token works once, for its purpose only, until it
expires. A reset link goes only to an address its owner proved with a
verification link, and stops working when that address changes.

Asking for a reset never tells whether the address has an account: the view
answers the same at once, and :func:`send_reset` runs in the background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.i18n import gettext as _
from coordinator.i18n import gettext_noop as N_
from coordinator.services import apikeys, audit, auth, login_sessions, tokens
from coordinator.services.mailer import Mailer, compose
from coordinator.settings import Settings
from coordinator.store import models

RESET, VERIFY = "reset", "verify"
PREFIXES = {RESET: "sfr.", VERIFY: "sfv."}
MAX_LIVE_TOKENS = 5  # per user and purpose; asking again retires the oldest


class MailTokenError(ValueError):
    """The link cannot be used; the message is safe to show."""


@dataclass(frozen=True)
class Links:
    """Where mail links point: the configured public URL, never a request's Host."""

    base: str

    @classmethod
    def of(cls, settings: Settings) -> Links:
        return cls(settings.public_url.rstrip("/"))

    def reset(self, token: str) -> str:
        return f"{self.base}/reset-password?token={token}"

    def verify(self, token: str) -> str:
        return f"{self.base}/verify-email?token={token}"


# Characters that make a string a list of addresses, a display name or a quoted
# local part: legal in RFC 5322, never in an address we mail a link to.
_NOT_IN_ADDRESS = frozenset(",;:<>()[]\\\"'`")


def normalise_address(raw: object) -> str | None:
    """A plausible single e-mail address, lower-cased; None for anything else."""
    address = str(raw or "").strip().lower()
    if len(address) > 254 or not auth.EMAIL.match(address):
        return None
    if any(c in _NOT_IN_ADDRESS or not c.isprintable() for c in address):
        return None
    return address


# -- tokens -----------------------------------------------------------------


async def issue(
    db: AsyncSession, user_id: int, purpose: str, email: str, now: float, ttl_s: float
) -> str:
    """A new link token (added to ``db``'s transaction); returns the token, shown once."""
    kind = models.MailToken
    await db.execute(
        delete(kind).where(
            kind.user_id == user_id,
            (kind.expires_at <= now) | kind.used_at.is_not(None),
        )
    )
    live = list(
        await db.scalars(
            select(kind.id)
            .where(kind.user_id == user_id, kind.purpose == purpose)
            .order_by(kind.created_at.desc(), kind.id)
        )
    )
    if len(live) >= MAX_LIVE_TOKENS:
        await db.execute(delete(kind).where(kind.id.in_(live[MAX_LIVE_TOKENS - 1 :])))
    issued = tokens.issue(PREFIXES[purpose])
    db.add(
        kind(
            id=issued.id,
            user_id=user_id,
            purpose=purpose,
            secret_hash=issued.secret_hash,
            email=email,
            created_at=now,
            expires_at=now + ttl_s,
        )
    )
    return issued.token


async def check(db: AsyncSession, token: str, purpose: str, now: float) -> models.MailToken:
    """The live token record ``token`` names, or MailTokenError (one message for every
    reason: unknown, wrong secret, used, expired, another purpose)."""
    parsed = tokens.parse(token, PREFIXES[purpose])
    record = await db.get(models.MailToken, parsed.id) if parsed else None
    if (
        parsed is None
        or record is None
        or record.purpose != purpose
        or not tokens.matches(record.secret_hash, parsed.secret)
        or record.used_at is not None
        or record.expires_at <= now
    ):
        raise MailTokenError(
            _("This link does not work any more: it was used, it expired or it is incomplete.")
        )
    return record


async def _claim(db: AsyncSession, record: models.MailToken, now: float) -> None:
    """Mark the token used, atomically: of two requests racing with one link, one wins."""
    kind = models.MailToken
    claimed = await db.execute(
        update(kind).where(kind.id == record.id, kind.used_at.is_(None)).values(used_at=now)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        raise MailTokenError(_("This link was just used."))


async def _retire(db: AsyncSession, user_id: int, purpose: str, now: float) -> None:
    kind = models.MailToken
    await db.execute(
        update(kind)
        .where(kind.user_id == user_id, kind.purpose == purpose, kind.used_at.is_(None))
        .values(used_at=now)
    )


# -- password reset ---------------------------------------------------------


async def replace_password(db: AsyncSession, user: models.User, password: str) -> None:
    """Set a new password; end every session of the user and revoke their API keys
    (whoever knew the old one may have used it to leave a way back in)."""
    user.password_hash = auth.hash_password(password)
    await login_sessions.end_all(db, user.id)
    await apikeys.revoke_all(db, user.id)


async def send_reset(
    sessions: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    address: str,
    lang: str,
    clock: Callable[[], float],
) -> None:
    """Mail a reset link to ``address`` if a (not suspended) account proved it; else nothing."""
    settings = mailer.settings
    async with sessions() as db:
        user = await db.scalar(
            select(models.User).where(
                models.User.email == address, models.User.email_verified_at.is_not(None)
            )
        )
        if user is None or user.banned:
            return
        token = await issue(db, user.id, RESET, address, clock(), settings.reset_token_s)
        await db.commit()
        username, user_lang = user.username, user.locale
    mail = compose(
        "reset",
        address,
        N_("Reset your shapefarm password"),
        user_lang or lang,
        username=username,
        link=Links.of(settings).reset(token),
        minutes=round(settings.reset_token_s / 60),
    )
    await mailer.send(mail)


async def reset_target(db: AsyncSession, token: str, now: float) -> models.User:
    """The user a reset link is for, if it still works."""
    return (await _reset_record(db, token, now))[0]


async def _reset_record(
    db: AsyncSession, token: str, now: float
) -> tuple[models.User, models.MailToken]:
    record = await check(db, token, RESET, now)
    user = await db.get(models.User, record.user_id)
    if user is None or user.email != record.email or user.email_verified_at is None:
        # The address changed since the link was sent: it no longer speaks for the account.
        raise MailTokenError(_("This link does not work any more. Ask for a new one."))
    return user, record


async def reset_password(
    db: AsyncSession, token: str, new: str, confirm: str, now: float
) -> models.User:
    """Use a reset link: set the password (sessions ended, API keys revoked), retire the link."""
    user, record = await _reset_record(db, token, now)
    problem = auth.password_problem(new, user.username)
    if problem:
        raise MailTokenError(problem)
    if new != confirm:
        raise MailTokenError(_("The two passwords differ."))
    await _claim(db, record, now)
    await replace_password(db, user, new)
    await _retire(db, user.id, RESET, now)
    audit.record(db, user, "user.password_reset", user.username, "via e-mail link", now=now)
    await db.commit()
    return user


# -- address verification -----------------------------------------------------


async def send_verification(
    sessions: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    user_id: int,
    address: str,
    clock: Callable[[], float],
    lang: str | None = None,
) -> None:
    """Mail a link that proves ``address`` for the user (nothing if another account
    already proved it: the answer on the page is the same), in their language or
    ``lang`` (the page's)."""
    settings = mailer.settings
    async with sessions() as db:
        user = await db.get(models.User, user_id)
        taken = await db.scalar(
            select(models.User.id).where(
                models.User.email == address,
                models.User.id != user_id,
                models.User.email_verified_at.is_not(None),
            )
        )
        if user is None or taken is not None:
            return
        token = await issue(db, user.id, VERIFY, address, clock(), settings.verify_token_s)
        await db.commit()
        username, user_lang = user.username, user.locale
    mail = compose(
        "verify",
        address,
        N_("Confirm your e-mail address for shapefarm"),
        user_lang or lang,
        username=username,
        link=Links.of(settings).verify(token),
        hours=round(settings.verify_token_s / 3600),
    )
    await mailer.send(mail)


async def verify_target(db: AsyncSession, token: str, now: float) -> tuple[models.User, str]:
    """The user and address a verification link is for, if it still works."""
    user, record = await _verify_record(db, token, now)
    return user, record.email


async def _verify_record(
    db: AsyncSession, token: str, now: float
) -> tuple[models.User, models.MailToken]:
    record = await check(db, token, VERIFY, now)
    user = await db.get(models.User, record.user_id)
    if user is None:
        raise MailTokenError(_("This link does not work any more. Ask for a new one."))
    return user, record


async def confirm_address(db: AsyncSession, token: str, now: float) -> models.User:
    """Use a verification link: the address becomes the user's, proven."""
    user, record = await _verify_record(db, token, now)
    address = record.email
    holder = await db.scalar(
        select(models.User).where(models.User.email == address, models.User.id != user.id)
    )
    if holder is not None:
        if holder.email_verified_at is not None:
            raise MailTokenError(_("This address already belongs to another account."))
        # An unproven claim (typed at registration) yields to the mailbox's owner.
        holder.email = None
        await db.flush()
    await _claim(db, record, now)
    user.email, user.email_verified_at = address, now
    await _retire(db, user.id, VERIFY, now)
    audit.record(db, user, "user.email_verified", user.username, address, now=now)
    await db.commit()
    return user
