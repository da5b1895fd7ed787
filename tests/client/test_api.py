"""The API client against a real coordinator and agent, and against hostile servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from client import ApiError, Client, ClientError
from tests.support.coordinators import (
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def test_client_generates_and_downloads_through_a_real_farm(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
        try:

            def use() -> tuple[bytes, dict[str, object], bytes, list[object]]:
                with Client(coord.http, key, timeout=60) as client:
                    glb = client.generate("a red chair", steps=4)
                    job = client.submit("a blue chair", steps=4)[0]
                    sockets = [client._conn and client._conn.sock]
                    done = client.wait(job["id"])
                    sockets.append(client._conn and client._conn.sock)
                    obj = client.download(job["id"], "obj")
                    sockets.append(client._conn and client._conn.sock)
                    return glb, done, obj, sockets

            glb, done, obj, sockets = await asyncio.to_thread(use)
        finally:
            await stop_agent(agent)
    assert glb[:4] == b"glTF"
    assert done["state"] == "succeeded" and done["result"]
    assert obj.startswith(b"#") or b"\nv " in obj
    # One connection for submit, the event stream and the download (kept alive after
    # the stream's finished event, not opened anew for each request).
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3, sockets


async def test_client_raises_the_apis_errors_by_code(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, _ = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:

        def failing(key: str, call: Callable[[Client], object]) -> ApiError:
            with Client(coord.http, key) as client, pytest.raises(ApiError) as caught:
                call(client)
            return caught.value

        def use() -> list[ApiError]:
            return [
                failing("sfk.not.a-key", lambda c: c.submit("a cube")),
                failing(key, lambda c: c.submit("a cube", steps="many")),
                failing(key, lambda c: c.job("no-such-job")),
                failing(key, lambda c: c.download("no-such-job")),
            ]

        unauthorized, invalid, missing, no_file = await asyncio.to_thread(use)
    assert (unauthorized.status, unauthorized.code) == (401, "unauthorized")
    assert (invalid.status, invalid.code) == (422, "validation_failed")
    assert invalid.details and invalid.details[0]["loc"] == ["body", "steps"]
    assert (missing.status, missing.code) == (404, "job_not_found")
    assert no_file.status == 404


async def test_client_wait_gives_up_when_no_agent_takes_the_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key, _ = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord:

        def use() -> None:
            with Client(coord.http, key) as client:
                job = client.submit("a cube", steps=4)[0]
                client.wait(job["id"], timeout=1.0)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(use), 30)


def test_client_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Client("ftp://farm.example.org", "sfk.a.b")
    with pytest.raises(ValueError):
        Client("https://farm.example.org", "sfk.a b")
    with pytest.raises(ValueError):
        Client("https://farm.example.org", "sfk.a.b").job("../admin")
    with pytest.raises(ValueError):
        Client("https://farm.example.org", "sfk.a.b").download("abc", "exe")


@contextlib.asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw HTTP server on 127.0.0.1 that answers with ``handler``; yields its URL and
    the request heads it read."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()
        await server.wait_closed()


def answer(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_client_bounds_a_download_that_never_ends() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", {"Content-Type": "model/gltf-binary"}))  # no length
        for _ in range(4096):  # 256 MiB if the client kept reading
            writer.write(b"\0" * 65536)
            await writer.drain()

    async with fake_server(endless) as (url, _):
        client = Client(url, "sfk.a.b", max_download=2**20)
        with client, pytest.raises(ClientError, match="larger than"):
            await asyncio.to_thread(client.download, "job1")


async def test_client_refuses_an_announced_oversize_model_before_reading_it() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", {"Content-Length": str(10 * 2**30)}))
        await writer.drain()

    async with fake_server(huge) as (url, _):
        client = Client(url, "sfk.a.b")
        with client, pytest.raises(ClientError, match="more than"):
            await asyncio.to_thread(client.download, "job1")


async def test_client_bounds_an_event_line_that_never_ends() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", {"Content-Type": "text/event-stream"}) + b"data: ")
        for _ in range(64):  # 4 MiB on one line
            writer.write(b"x" * 65536)
            await writer.drain()

    async with fake_server(flood) as (url, _):
        client = Client(url, "sfk.a.b")
        with client, pytest.raises(ClientError, match="too long"):
            await asyncio.to_thread(client.wait, "job1", 30)


async def test_client_follows_a_signed_link_without_sending_the_key() -> None:
    async def bucket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer("200 OK", {"Content-Length": "8"}, b"glTFdata"))
        await writer.drain()

    async with fake_server(bucket) as (bucket_url, bucket_heads):

        async def farm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            link = f"{bucket_url}/models/job1.glb?sig=abc"
            headers = {"Location": link, "Content-Length": "0"}
            writer.write(answer("307 Temporary Redirect", headers))
            await writer.drain()

        async with fake_server(farm) as (url, farm_heads):
            with Client(url, "sfk.secret.key") as client:
                data = await asyncio.to_thread(client.download, "job1")
    assert data == b"glTFdata"
    assert b"sfk.secret.key" in farm_heads[0]
    assert bucket_heads[0].startswith(b"GET /models/job1.glb?sig=abc ")
    assert b"sfk.secret.key" not in bucket_heads[0]


async def test_client_reads_a_non_json_error_page() -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b"<html>502 Bad Gateway</html>"
        writer.write(answer("502 Bad Gateway", {"Content-Length": str(len(body))}, body))
        await writer.drain()

    async with fake_server(proxy) as (url, _):
        with Client(url, "sfk.a.b") as client, pytest.raises(ApiError) as caught:
            await asyncio.to_thread(client.job, "job1")
    assert (caught.value.status, caught.value.code) == (502, "http_error")
    assert "Bad Gateway" in caught.value.message
