"""deploy/nginx.conf in front of a real coordinator: wss:// agents, SSE, proxy trust."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import os
import re
import secrets
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from coordinator.store.migrations import upgrade_sync
from tests.support.coordinators import (
    PASSWORD,
    ROOT,
    make_settings,
    provision,
    start_agent,
    stop_agent,
    stop_process,
)
from tests.support.postgres import copy_database, throwaway_postgres
from tests.support.procs import CoordinatorProcess, coordinator_env, free_port

NGINX = Path("/usr/sbin/nginx")
SITE = ROOT / "deploy" / "nginx.conf"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
THIRD_LIMITED = ["ok", "ok", "limited"]  # auth_rate_per_minute=2
TIMINGS = {"heartbeat_s": 0.5, "lease_s": 10.0, "reconnect_grace_s": 5.0}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not NGINX.exists(), reason="nginx is not installed: apt-get install nginx"),
]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def _substitute(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/nginx.conf no longer contains {old!r}; update this test"
    return text.replace(old, new)


def render_site(tmp: Path, https_port: int, http_port: int, upstream: int | list[int]) -> Path:
    """The shipped site file with only ports and certificate paths changed (``upstream``:
    one coordinator's port, or several replicas')."""
    cert, key = _self_signed(tmp)
    text = SITE.read_text()
    text = _substitute(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = _substitute(text, "listen [::]:443 ssl http2;\n", "")
    text = _substitute(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = _substitute(text, "listen [::]:80;\n", "")
    text = _substitute(text, "/etc/letsencrypt/live/farm.example.org/fullchain.pem", str(cert))
    text = _substitute(text, "/etc/letsencrypt/live/farm.example.org/privkey.pem", str(key))
    ports = upstream if isinstance(upstream, list) else [upstream]
    servers = "\n    ".join(f"server 127.0.0.1:{port};" for port in ports)
    text = _substitute(text, "server 127.0.0.1:8000;", servers)
    site = tmp / "site.conf"
    site.write_text(text)
    return site


@contextlib.contextmanager
def running_nginx(tmp: Path, site: Path) -> Iterator[None]:
    prefix = tmp / "nginx"
    prefix.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read tmp paths
    temp = "".join(f"{kind}_temp_path {prefix}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\naccess_log {prefix}/access.log;\n{temp}include {site};\n}}\n"
    )
    check = subprocess.run([str(NGINX), "-t", "-p", str(prefix), "-c", str(conf)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([str(NGINX), "-p", str(prefix), "-c", str(conf)],
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        yield
    finally:
        stop_process(proc)
        assert proc.stderr is not None
        proc.stderr.close()


@contextlib.asynccontextmanager
async def stack(tmp: Path, **settings: object) -> AsyncIterator[tuple[CoordinatorProcess, int]]:
    """Coordinator process + nginx in front; yields (coordinator, https port)."""
    coord = CoordinatorProcess(tmp / "data", free_port(), coordinator_env(**settings),
                               tmp / "coordinator.log")  # fmt: skip
    https_port = free_port()
    site = render_site(tmp, https_port, free_port(), coord.port)
    await coord.start()
    try:
        with running_nginx(tmp, site):
            async with httpx.AsyncClient(verify=_tls(tmp), timeout=5) as probe:
                for _ in range(100):  # nginx binds within milliseconds
                    with contextlib.suppress(httpx.TransportError):
                        if (await probe.get(f"https://127.0.0.1:{https_port}/healthz")).is_success:
                            break
                    await asyncio.sleep(0.05)
            yield coord, https_port
    finally:
        coord.stop()


def _tls(tmp: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp / "cert.pem"))


async def _login(client: httpx.AsyncClient, username: str, **headers: str) -> httpx.Response:
    page = await client.get("/login")
    match = CSRF.search(page.text)
    assert match, page.text
    return await client.post(
        "/login",
        data={"csrf_token": match.group(1), "username": username, "password": PASSWORD},
        headers=headers,
    )


async def test_nginx_agent_over_wss_completes_a_job_and_sse_streams(tmp_path: Path) -> None:
    env = {"trusted_proxies": "127.0.0.1", "secure_cookies": "true", **TIMINGS}
    key, token_file = await provision(make_settings(tmp_path / "data"), tmp_path, "ops", True)
    async with stack(tmp_path, **env) as (_, port):
        base = f"https://127.0.0.1:{port}"
        tls = _tls(tmp_path)
        async with httpx.AsyncClient(base_url=base, verify=tls, timeout=30) as browser:
            login = await _login(browser, "ops")
            assert login.status_code == 303
            assert "secure" in login.headers["set-cookie"].lower()  # behind TLS
            api = {"Authorization": f"Bearer {key}"}
            response = await browser.post("/api/v1/jobs", json={"prompt": "a proxied cube"},
                                          headers=api)  # fmt: skip
            assert response.status_code == 201, response.text
            assert response.headers.get_list("strict-transport-security") == ["max-age=31536000"]
            assert response.headers.get_list("x-content-type-options") == ["nosniff"]
            job_id = response.json()["jobs"][0]["id"]
            agent = None
            events: list[str] = []
            try:
                async with (
                    asyncio.timeout(60),
                    browser.stream("GET", f"/jobs/{job_id}/events",
                                   headers={"Accept": "text/event-stream"}) as stream,
                ):  # fmt: skip
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    async for line in stream.aiter_lines():
                        events.append(line)
                        if line == "event: status" and agent is None:
                            # The first event arrived while no agent exists: not buffered.
                            agent = start_agent(
                                f"wss://127.0.0.1:{port}/agent/ws", token_file,
                                tmp_path / "spool", "--ca-file", str(tmp_path / "cert.pem"),
                                model="instant:delay=0.5,steps=5,size=65536",
                            )  # fmt: skip
                        if line == "event: done":
                            break
            finally:
                if agent is not None:
                    assert await stop_agent(agent) == 0
            assert events.count("event: status") >= 2, events
            job = (await browser.get(f"/api/v1/jobs/{job_id}", headers=api)).json()
            assert job["state"] == "succeeded", job
            glb = (await browser.get(f"/api/v1/jobs/{job_id}/download/glb", headers=api)).content
            assert hashlib.sha256(glb).hexdigest() == job["result"]["sha256"]
            await _downloads_are_gzipped(browser, job_id, api, glb)
            # A submission may carry a picture of up to 10 MB (base64): nginx lets it
            # through to the coordinator, which judges it (not a picture: its JSON 422).
            big = {"image": base64.b64encode(b"x" * 3_000_000).decode()}
            refused = await browser.post("/api/v1/jobs", json=big, headers=api)
            assert refused.status_code == 422, refused.text[:200]
            assert refused.json()["error"]["code"] == "image_unsupported"


@dataclass(frozen=True)
class Raw:
    status_code: int
    headers: httpx.Headers
    content: bytes  # exactly as sent: not decoded


async def _raw(client: httpx.AsyncClient, path: str, **headers: str) -> Raw:
    async with client.stream("GET", path, headers=headers) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    return Raw(response.status_code, response.headers, body)


async def _downloads_are_gzipped(
    client: httpx.AsyncClient, job_id: str, api: dict[str, str], glb: bytes
) -> None:
    """Model files come gzip-compressed when asked, and decode to the stored bytes; pages
    (which carry CSRF tokens) are never compressed (BREACH)."""
    assert len(glb) > 32768  # a sized model (the coordinator stores its own encoding)
    for path, headers in (
        (f"/api/v1/jobs/{job_id}/download/glb", api),
        (f"/jobs/{job_id}/model.glb", {}),  # the viewer's file, with the session cookie
        (f"/jobs/{job_id}/download/glb", {}),
    ):
        packed = await _raw(client, path, **headers, **{"Accept-Encoding": "gzip"})
        assert packed.status_code == 200, (path, packed.status_code)
        assert packed.headers.get("content-encoding") == "gzip", (path, packed.headers)
        assert "accept-encoding" in packed.headers.get("vary", "").lower()
        assert len(packed.content) < len(glb) * 0.7, (path, len(packed.content))
        assert gzip.decompress(packed.content) == glb, path
        plain = await _raw(client, path, **headers, **{"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == glb, path
    for fmt in ("obj", "stl", "ply"):
        path = f"/api/v1/jobs/{job_id}/download/{fmt}"
        packed = await _raw(client, path, **api, **{"Accept-Encoding": "gzip"})
        plain = await _raw(client, path, **api, **{"Accept-Encoding": "identity"})
        assert packed.headers.get("content-encoding") == "gzip", (fmt, packed.headers)
        assert gzip.decompress(packed.content) == plain.content and plain.content, fmt
    page = await _raw(client, f"/jobs/{job_id}", **{"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and "csrf_token" in page.content.decode()
    assert "content-encoding" not in page.headers


async def _attempts(client: httpx.AsyncClient, spoofs: list[str]) -> list[str]:
    """Failed logins (wrong user), one per spoofed address: "ok" or "limited" (429)."""
    codes = [
        (await _login(client, "nobody", **{"X-Forwarded-For": spoof})).status_code
        for spoof in spoofs
    ]
    assert set(codes) <= {400, 429}, codes
    return ["limited" if code == 429 else "ok" for code in codes]


async def test_nginx_forwarded_for_is_trusted_only_from_trusted_proxies(tmp_path: Path) -> None:
    limit = {"auth_rate_per_minute": 2, **TIMINGS}
    async with stack(tmp_path, trusted_proxies="127.0.0.1", **limit) as (coord, port):
        # Through nginx: a client's own X-Forwarded-For is overwritten, so spoofing a
        # new address per attempt does not escape the limit.
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}",
                                     verify=_tls(tmp_path), timeout=30) as client:  # fmt: skip
            assert await _attempts(client, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == THIRD_LIMITED
        # Straight from the trusted proxy's address: the header names the client.
        async with httpx.AsyncClient(base_url=coord.http, timeout=30) as client:
            assert await _attempts(client, ["192.0.2.1", "192.0.2.1", "192.0.2.1"]) == THIRD_LIMITED
            assert await _attempts(client, ["192.0.2.2"]) == ["ok"]
    other = tmp_path / "untrusting"
    other.mkdir()
    async with (
        stack(other, **limit) as (coord, _),
        httpx.AsyncClient(base_url=coord.http, timeout=30) as client,
    ):
        # No trusted proxies: the header is ignored and every attempt is 127.0.0.1's.
        assert await _attempts(client, ["192.0.2.7", "192.0.2.8", "192.0.2.9"]) == THIRD_LIMITED


@pytest.fixture(scope="module")
def migrated_postgres() -> Iterator[str]:
    with throwaway_postgres() as url:
        upgrade_sync(url)
        yield url


async def test_nginx_round_robin_over_three_replicas(
    tmp_path: Path, migrated_postgres: str
) -> None:
    """An upstream of three replicas, no sticky sessions: every request may reach another
    replica, yet the login holds, the job runs on the agent (wherever it connected), and
    its SSE stream and download work."""
    url = copy_database(migrated_postgres, f"test_{secrets.token_hex(6)}")
    data = tmp_path / "data"
    key, token_file = await provision(make_settings(data, database_url=url), tmp_path, "ops", True)
    env = coordinator_env(
        database_url=url, replicas="true", secret_key=secrets.token_urlsafe(32),
        trusted_proxies="127.0.0.1", secure_cookies="true", replica_heartbeat_s=0.3, **TIMINGS,
    )  # fmt: skip
    procs = [CoordinatorProcess(data, free_port(), env, tmp_path / f"r{i}.log") for i in range(3)]
    https_port = free_port()
    site = render_site(tmp_path, https_port, free_port(), [proc.port for proc in procs])
    agent = None
    try:
        await asyncio.gather(*(proc.start() for proc in procs))
        with running_nginx(tmp_path, site):
            base = f"https://127.0.0.1:{https_port}"
            async with httpx.AsyncClient(base_url=base, verify=_tls(tmp_path), timeout=30) as web:
                for _ in range(100):  # nginx binds within milliseconds
                    with contextlib.suppress(httpx.TransportError):
                        if (await web.get("/healthz")).is_success:
                            break
                    await asyncio.sleep(0.05)
                answered = {(await web.get("/healthz")).json()["replica"] for _ in range(6)}
                assert len(answered) == 3  # round robin: every replica answers
                assert (await _login(web, "ops")).status_code == 303
                for _ in range(3):  # the session is good on every replica
                    assert (await web.get("/profile")).status_code == 200
                api = {"Authorization": f"Bearer {key}"}
                made = await web.post("/api/v1/jobs", json={"prompt": "a cube"}, headers=api)
                assert made.status_code == 201, made.text
                job_id = made.json()["jobs"][0]["id"]
                agent = start_agent(
                    f"wss://127.0.0.1:{https_port}/agent/ws", token_file, tmp_path / "spool",
                    "--ca-file", str(tmp_path / "cert.pem"), model="instant:delay=0.5,steps=5",
                )  # fmt: skip
                async with (
                    asyncio.timeout(60),
                    web.stream("GET", f"/jobs/{job_id}/events",
                               headers={"Accept": "text/event-stream"}) as stream,
                ):  # fmt: skip
                    async for line in stream.aiter_lines():
                        if line == "event: done":
                            break
                job = (await web.get(f"/api/v1/jobs/{job_id}", headers=api)).json()
                assert job["state"] == "succeeded", job
                for _ in range(3):
                    glb = await web.get(f"/api/v1/jobs/{job_id}/download/glb", headers=api)
                    assert hashlib.sha256(glb.content).hexdigest() == job["result"]["sha256"]
    finally:
        if agent is not None:
            stop_process(agent)
        for proc in procs:
            proc.stop()
