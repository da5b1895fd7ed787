"""A real HTTP receiver on 127.0.0.1 for webhook tests: records POSTs, answers scripted codes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.services import webhook_keys
from coordinator.store import models


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


def verify(secret: str, got: Received) -> dict[str, Any]:
    """What a receiver does: check the signature over "<t>." + body, then parse."""
    fields = dict(part.split("=", 1) for part in got.headers["shapefarm-signature"].split(","))
    mac = hmac.new(secret.encode(), f"{fields['t']}.".encode() + got.body, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), fields["v1"])
    data: dict[str, Any] = json.loads(got.body)
    return data


class Receiver:
    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)  # answered in turn; 200 once they run out
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.statuses.pop(0) if self.statuses else 200
            head = f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n"
            writer.write(head.encode() + b"\r\n")
            await writer.drain()
            async with self._changed:
                self.requests.append(Received(path, headers, body))
                self._changed.notify_all()
        finally:
            writer.close()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests


@contextlib.asynccontextmanager
async def receiving(statuses: tuple[int, ...] = ()) -> AsyncIterator[Receiver]:
    receiver = Receiver(statuses)
    server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


async def make_secret(sessions: async_sessionmaker[AsyncSession], username: str = "alice") -> str:
    """Make the user's (only) key's webhook secret, as the profile's button does."""
    async with sessions() as db:
        user = await db.scalar(select(models.User).where(models.User.username == username))
        assert user is not None
        key = await db.scalar(select(models.ApiKey).where(models.ApiKey.user_id == user.id))
        assert key is not None
        secret = await webhook_keys.replace_secret(db, user, key.id)
        await db.commit()
    return secret
