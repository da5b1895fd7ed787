"""HTTP/1.1 over bare asyncio sockets, for tests that need what httpx hides: a request
left half-sent, a stream held open, whether the server closed the connection."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

import httpx

from tests.support.coordinators import PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
COOKIE = "shapefarm_session"


async def login_cookie(base_url: str, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; the session cookie's value."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        match = CSRF.search((await client.get("/login")).text)
        assert match, "no CSRF token on /login"
        response = await client.post(
            "/login",
            data={"csrf_token": match.group(1), "username": username, "password": password},
        )
        assert response.status_code == 303, response.text
        return str(client.cookies[COOKIE])


@dataclass
class RawResponse:
    status: int
    head: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def read_to_eof(self, within: float) -> str:
        """Everything until the server closes the connection (TimeoutError if it does not)."""
        data = await asyncio.wait_for(self.reader.read(), within)
        return data.decode(errors="replace")

    async def read_to_end(self, within: float) -> str:
        """The rest of a chunked body, up to its last chunk or the connection's end
        (TimeoutError if neither comes in time)."""
        data = b""

        async def collect() -> None:
            nonlocal data
            while not data.endswith(b"\r\n0\r\n\r\n"):
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                data += chunk

        await asyncio.wait_for(collect(), within)
        return data.decode(errors="replace")

    async def read_event(self, within: float) -> str:
        """The next SSE event or comment, up to its blank line ("" at EOF)."""
        data = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), within)
        return data.decode(errors="replace")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def get(
    port: int, path: str, cookie: str | None = None, within: float = 5.0, **headers: str
) -> RawResponse:
    """Send a GET and read the response head (not the body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), within)
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
    if cookie is not None:
        lines.append(f"Cookie: {COOKIE}={cookie}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)).decode()
    except BaseException:
        writer.close()
        raise
    return RawResponse(int(head.split(" ", 2)[1]), head, reader, writer)
