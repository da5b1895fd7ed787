"""A small client of the coordinator's JSON API, on the standard library only.

One :class:`Client` holds one keep-alive HTTP(S) connection: use one per thread. It
submits jobs, waits for them on their event stream (``GET /api/v1/jobs/{id}/events``:
no polling) and downloads models; ``generate`` does all three. Every answer is bounded
(JSON bodies, event lines, downloads), so a broken or hostile server cannot make it
use unbounded memory, and every call has a timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

__all__ = ["DEFAULT_MAX_DOWNLOAD", "ApiError", "Client", "ClientError"]

DEFAULT_MAX_DOWNLOAD = 512 * 2**20  # bytes of one model, at most
MAX_JSON = 4 * 2**20  # bytes of one JSON answer
MAX_LINE = 1 * 2**20  # bytes of one event-stream line
FINAL = frozenset({"succeeded", "failed", "cancelled"})
FORMATS = frozenset({"glb", "obj", "stl", "ply", "meshopt"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A connection idle this long is opened afresh before a POST (servers close idle ones;
# uvicorn after 5 s), since a POST that may have reached the server is never re-sent.
IDLE_S = 2.0


class ClientError(Exception):
    """The server could not be reached or answered something this client cannot use."""


class ApiError(ClientError):
    """The API answered with an error: ``status``, its ``code`` (stable, see docs/api.md)
    and ``message``."""

    def __init__(self, status: int, code: str, message: str, details: list[Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class Client:
    """``Client("https://farm.example.org", "sfk.…")``; not thread-safe (one per thread)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        max_download: int = DEFAULT_MAX_DOWNLOAD,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if not api_key or any(c.isspace() for c in api_key):
            raise ValueError("the API key is empty or has spaces in it")
        if timeout <= 0 or max_download <= 0:
            raise ValueError("timeout and max_download must be positive")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_download = max_download
        self._parts = parts
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._conn: http.client.HTTPConnection | None = None
        self._used_at = 0.0

    # -- the API ---------------------------------------------------------------

    def submit(self, prompt: str, **fields: Any) -> list[dict[str, Any]]:
        """Queue a job (one per variant); returns the jobs as the API answers them."""
        body = json.dumps({"prompt": prompt, **fields}).encode()
        answer = self._json("POST", "/api/v1/jobs", body)
        return list(answer["jobs"])

    def job(self, job_id: str, wait: int = 0) -> dict[str, Any]:
        """The job as it is; with ``wait`` (1-60 s) the server holds the answer until the
        job has finished or that time has passed (a long-poll)."""
        if not 0 <= wait <= 60:
            raise ValueError("wait is 0 to 60 seconds")
        query = f"?wait={wait}" if wait else ""
        path = f"/api/v1/jobs/{_segment(job_id)}{query}"
        return dict(self._json("GET", path, timeout=self.timeout + wait))

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Until the job has finished (succeeded, failed or was cancelled); returns it.
        Listens on its event stream, opened again if the server ends it early."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        path = f"/api/v1/jobs/{_segment(job_id)}/events"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job_id} has not finished in time")
            for name, data in self._events(path, left):
                if name == "finished":
                    return dict(_loads(data.encode()))
            job = self.job(job_id)  # the stream ended early (server's stream_max_s)
            if job.get("state") in FINAL:
                return job

    def download(self, job_id: str, fmt: str = "glb") -> bytes:
        """The finished job's model in ``fmt`` (glb, obj, stl, ply, or meshopt: the GLB
        quantized and meshopt-compressed, as the web viewer loads it)."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(sorted(FORMATS))}")
        path = f"/api/v1/jobs/{_segment(job_id)}/download/{fmt}"
        response = self._request("GET", path)
        if response.status in _REDIRECTS:  # a signed link to the bucket (no key sent there)
            location = response.getheader("Location") or ""
            _drain(response)
            return self._fetch_elsewhere(urljoin(self.url + path, location))
        return self._body(response, self.max_download)

    def generate(self, prompt: str, fmt: str = "glb", **fields: Any) -> bytes:
        """Submit one job, wait for it and download its model; ApiError if it failed."""
        job = self.submit(prompt, **fields)[0]
        done = self.wait(job["id"])
        if done.get("state") != "succeeded":
            reason = done.get("error") or done.get("state")
            raise ApiError(200, f"job_{done.get('state')}", f"job {job['id']}: {reason}", [])
        return self.download(job["id"], fmt)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = self._parts
            self._conn = _open(parts.scheme, parts.hostname or "", parts.port, self.timeout)
        return self._conn

    def _request(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None
    ) -> http.client.HTTPResponse:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        target = self._parts.path.rstrip("/") + path
        if method != "GET" and time.monotonic() - self._used_at > IDLE_S:
            self.close()  # the server may have closed it: a submission is not retried
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            conn = self._connection()
            try:
                conn.timeout = timeout or self.timeout
                if conn.sock is not None:
                    conn.sock.settimeout(conn.timeout)
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                # Only a GET (or a request that never left) may be sent again.
                if attempt == 2 or (method != "GET" and not isinstance(exc, BrokenPipeError)):
                    raise ClientError(f"{method} {path}: the connection failed: {exc}") from exc
                continue
            except TimeoutError as exc:
                self.close()
                raise TimeoutError(f"{method} {path}: no answer in time") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise ClientError(f"{method} {path}: {exc}") from exc
            self._used_at = time.monotonic()
            return response
        raise AssertionError("unreachable")

    def _json(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None
    ) -> Any:
        response = self._request(method, path, body, timeout)
        return _loads(self._body(response, MAX_JSON))

    def _body(self, response: http.client.HTTPResponse, limit: int) -> bytes:
        """The whole body of a successful answer (ApiError otherwise), at most ``limit``."""
        length = response.getheader("Content-Length") or ""
        if response.status < 400 and length.isdigit() and int(length) > limit:
            self.close()
            raise ClientError(f"the answer has {length} bytes, more than {limit}")
        try:
            data = response.read(limit + 1)
        except TimeoutError as exc:
            self.close()
            raise TimeoutError("the answer did not arrive in time") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ClientError(f"reading the answer failed: {exc}") from exc
        if len(data) > limit:
            self.close()
            raise ClientError(f"the answer is larger than {limit} bytes")
        if response.will_close:
            self.close()
        if response.status >= 400:
            raise _api_error(response.status, data)
        return data

    def _events(self, path: str, timeout: float) -> Iterator[tuple[str, str]]:
        """(event, data) of one event stream, until it ends."""
        response = self._request("GET", path, timeout=timeout)
        if response.status != 200:
            self._body(response, MAX_JSON)  # raises the ApiError
            raise ClientError(f"the event stream answered {response.status}")
        name, data = "message", ""
        try:
            while True:
                line = response.readline(MAX_LINE + 1)
                if not line:
                    break
                if len(line) > MAX_LINE:
                    raise ClientError("an event-stream line is too long")
                text = line.decode("utf-8").rstrip("\r\n")
                if not text:  # an event ends at a blank line
                    if data and name == "finished":
                        # Read to the end of the body before the caller gets the event:
                        # it stops here, and a body read to its end keeps the connection.
                        _drain(response)
                        yield name, data
                        return
                    if data:
                        yield name, data
                    name, data = "message", ""
                elif text.startswith("event:"):
                    name = text[6:].strip()
                elif text.startswith("data:"):
                    data += text[5:].lstrip(" ")
        except TimeoutError as exc:
            raise TimeoutError("the event stream said nothing in time") from exc
        except (OSError, http.client.HTTPException, UnicodeDecodeError) as exc:
            raise ClientError(f"the event stream broke: {exc}") from exc
        finally:
            if not response.isclosed():
                self.close()  # a stream left half-read cannot carry the next request

    def _fetch_elsewhere(self, url: str) -> bytes:
        """GET an absolute URL (a signed bucket link) on its own connection, no key sent."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"the download redirected to {url!r}")
        conn = _open(parts.scheme, parts.hostname, parts.port, self.timeout)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target or "/")
            response = conn.getresponse()
            data = response.read(self.max_download + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"the download from {parts.hostname} failed: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise ClientError(f"the download from {parts.hostname} answered {response.status}")
        if len(data) > self.max_download:
            raise ClientError(f"the model is larger than {self.max_download} bytes")
        return data


def _segment(value: str) -> str:
    """A job id fit for a path segment (ids are URL-safe; anything else is refused)."""
    if not value or not all(c.isalnum() or c in "-_" for c in value) or len(value) > 64:
        raise ValueError(f"not a job id: {value!r}")
    return value


def _loads(data: bytes) -> Any:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ClientError(f"the answer is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError("the answer is not a JSON object")
    return value


def _open(scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _drain(response: http.client.HTTPResponse) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        response.read(MAX_JSON)


def _api_error(status: int, data: bytes) -> ApiError:
    try:
        error: Mapping[str, Any] = json.loads(data)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]),
                        list(error.get("details") or []))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        text = data[:200].decode("utf-8", "replace")
        return ApiError(status, "http_error", f"HTTP {status}: {text}", [])
