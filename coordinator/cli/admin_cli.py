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

from coordinator.services import account_mail, apikeys, auth
from coordinator.services.enrollment import enroll
from coordinator.settings import Settings
from coordinator.store import models
from coordinator.store.db import make_engine, make_sessionmaker
from coordinator.store.migrations import upgrade


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
    async with admin_db(settings) as db:
        user = await _find_user(db, owner)
        agent, token = await enroll(db, user, name, time.time(), approved)
        db.add(
            models.AuditEntry(
                at=time.time(),
                action="agent.enroll",
                target=agent.id,
                detail=f"via CLI for {user.username}",
            )
        )
        await db.commit()
        return agent.id, token


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
        db.add(
            models.AuditEntry(
                at=time.time(),
                action="user.password_reset",
                target=user.username,
                detail="via CLI; sessions ended, API keys revoked",
            )
        )
        await db.commit()


async def set_tier(settings: Settings, username: str, tier: str, days: float | None) -> None:
    from coordinator.app import load_tiers

    if tier not in load_tiers(settings.tiers_file):
        raise AdminError(f"unknown tier {tier!r}")
    async with admin_db(settings) as db:
        user = await _find_user(db, username)
        user.tier = tier
        user.tier_expires_at = time.time() + days * 86400 if days else None
        db.add(
            models.AuditEntry(
                at=time.time(),
                action="user.tier",
                target=user.username,
                detail=f"{tier} for {days or 'unlimited'} days via CLI",
            )
        )
        await db.commit()


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
        elif args.action == "set-tier":
            asyncio.run(set_tier(settings, args.username, args.tier, args.days))
            print(f"{args.username} is now on the {args.tier} tier")
    except AdminError as exc:
        print(f"shapefarm admin: {exc}", file=sys.stderr)
        return 1
    return 0
