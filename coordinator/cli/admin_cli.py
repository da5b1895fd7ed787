"""``shapefarm admin …``: user, tier and agent-token administration from a shell."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.services import (
    account_mail,
    admin_users,
    apikeys,
    audit,
    auth,
    vouchers,
)
from coordinator.services.enrollment import enroll_agent
from coordinator.services.errors import ActionError
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.db import make_engine, make_sessionmaker
from coordinator.store.migrations import upgrade

VIA_CLI = "via CLI"  # noted in the audit entries of what the CLI does (no actor)


class AdminError(Exception):
    pass


@contextlib.asynccontextmanager
async def admin_db(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on an up-to-date database (created in the data dir if needed)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        async with make_sessionmaker(engine)() as db:
            yield db
    finally:
        await engine.dispose()


def _read_password(args: argparse.Namespace, username: str) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {username}: ")
        if getpass.getpass("Repeat: ") != password:
            raise AdminError("the passwords differ")
    problem = auth.password_problem(password, username)
    if problem:
        raise AdminError(problem)
    return password


async def create_user(
    settings: Settings, username: str, password: str, email: str | None, is_admin: bool
) -> models.User:
    if not auth.USERNAME.match(username):
        raise AdminError("usernames are 3–32 letters, digits, dots, dashes or underscores")
    async with admin_db(settings) as db:
        exists = await db.scalar(
            select(models.User.id).where(func.lower(models.User.username) == username.lower())
        )
        if exists is not None:
            raise AdminError(f"user {username!r} exists already")
        user = models.User(
            username=username,
            email=email,
            is_admin=is_admin,
            tier="admin" if is_admin else "free",
            password_hash=auth.hash_password(password),
            created_at=time.time(),
        )
        db.add(user)
        await db.commit()
        return user


async def _find_user(db: AsyncSession, username: str) -> models.User:
    user = await db.scalar(
        select(models.User).where(func.lower(models.User.username) == username.lower())
    )
    if user is None:
        raise AdminError(f"no user {username!r}")
    return user


async def issue_token(
    settings: Settings, owner: str, name: str, approved: bool | None = None
) -> tuple[str, str]:
    """Enroll an agent for ``owner`` as the volunteer page does (name, limit, approval
    rule, audit); ``approved`` overrides the rule (tests, benchmarks). (agent id, token)."""
    async with admin_db(settings) as db:
        user = await _find_user(db, owner)
        enrolled = await enroll_agent(
            db, settings, user, name, time.time(), actor=None, approved=approved, via=VIA_CLI
        )
        return enrolled.agent.id, enrolled.token


async def create_api_key(settings: Settings, username: str, name: str) -> str:
    async with admin_db(settings) as db:
        user = await _find_user(db, username)
        _, key = await apikeys.create(db, user, name, time.time())
        await db.commit()
        return key


async def reset_password(settings: Settings, username: str, password: str) -> None:
    """Set a user's password, ending their sessions and revoking their API keys."""
    async with admin_db(settings) as db:
        user = await _find_user(db, username)
        await account_mail.replace_password(db, user, password)
        detail = f"{VIA_CLI}; sessions ended, API keys revoked"
        audit.record(db, None, "user.password_reset", user.username, detail)
        await db.commit()


async def set_tier(settings: Settings, username: str, tier: str, days: float | None) -> None:
    """As the admin console does: a known tier, 0 < days <= 3650 or none, audited."""
    from coordinator.app import load_tiers

    tiers = load_tiers(settings.tiers_file)
    async with admin_db(settings) as db:
        user = await _find_user(db, username)
        await admin_users.assign_tier(db, tiers, user, tier, days, None, time.time(), VIA_CLI)


async def create_voucher(settings: Settings, spec: vouchers.NewVoucher) -> str:
    from coordinator.app import load_tiers

    async with admin_db(settings) as db:
        try:
            _, code = await vouchers.create(
                db, load_tiers(settings.tiers_file), spec, None, time.time()
            )
        except vouchers.VoucherError as exc:
            raise AdminError(str(exc)) from None
        return code


def write_secret_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.action == "migrate":
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            asyncio.run(upgrade(settings.db_url))
            print("database is up to date")
        elif args.action in ("create-admin", "create-user"):
            password = _read_password(args, args.username)
            asyncio.run(
                create_user(
                    settings, args.username, password, args.email, args.action == "create-admin"
                )
            )
            print(
                f"created {'administrator' if args.action == 'create-admin' else 'user'} "
                f"{args.username}"
            )
        elif args.action == "reset-password":
            password = _read_password(args, args.username)
            asyncio.run(reset_password(settings, args.username, password))
            print(f"password of {args.username} changed; their sessions and API keys are revoked")
        elif args.action == "issue-token":
            agent_id, token = asyncio.run(issue_token(settings, args.owner, args.name))
            if args.token_file:
                write_secret_file(args.token_file, token)
                print(f"agent {agent_id} enrolled; token written to {args.token_file}")
            else:
                print(f"agent {agent_id} enrolled. Its token (shown once):\n{token}")
        elif args.action == "api-key":
            key = asyncio.run(create_api_key(settings, args.username, args.name))
            if args.key_file:
                write_secret_file(args.key_file, key)
                print(f"API key for {args.username} written to {args.key_file}")
            else:
                print(f"API key for {args.username} (shown once):\n{key}")
        elif args.action == "create-voucher":
            spec = vouchers.NewVoucher(
                args.tier, args.days, args.uses, args.valid_days, args.note or ""
            )
            code = asyncio.run(create_voucher(settings, spec))
            print(f"voucher for {args.days:g} days of {args.tier}, {args.uses} use(s):\n{code}")
        elif args.action == "set-tier":
            asyncio.run(set_tier(settings, args.username, args.tier, args.days))
            print(f"{args.username} is now on the {args.tier} tier")
    except AdminError as exc:
        print(f"shapefarm admin: {exc}", file=sys.stderr)
        return 1
    except ActionError as exc:
        # The services' messages are sentences for a page; after "prog:" they start small.
        message = str(exc)
        print(f"shapefarm admin: {message[:1].lower()}{message[1:]}", file=sys.stderr)
        return 1
    return 0
