"""Run the coordinator under uvicorn."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from coordinator.app import create_app
from coordinator.link.compression import BudgetedDeflateProtocol
from coordinator.settings import Settings
from coordinator.web.streams import max_connections
from protocol import heap

_LATE = b"The request headers came too late."
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_LATE), _LATE)
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's head.

    uvicorn times out idle keep-alive connections but not a client that sends its
    headers a byte at a time (slowloris): 400 such sockets stayed open for ever.
    A timer runs from the connection's start, and from the first byte of each
    further request, until the request line and headers are complete; when it
    fires the client gets a 408 and the connection is closed. Select it through
    ``uvicorn.Config(http=...)`` with :meth:`with_timeout`.
    """

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[HeaderTimeoutProtocol]:
        return type(cls.__name__, (cls,), {"header_timeout_s": seconds})

    # uvicorn's own connection_made narrows asyncio's BaseTransport to Transport the same way.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()


def uvicorn_config(
    app: Any, settings: Settings, log_level: str = "info", **overrides: Any
) -> uvicorn.Config:
    """The server configuration; tests use it too so they run what production runs.

    Proxy headers are honoured only from ``settings.trusted_proxies``: with none
    configured, X-Forwarded-For is ignored and the socket's peer is the client.
    """
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
        "ws_max_size": settings.max_frame_bytes,
        # permessage-deflate with a bound on what one socket read may inflate to
        # (unbounded, it was a compression bomb past every upload limit); agents send
        # result bytes uncompressed and keep it for control messages.
        "ws": BudgetedDeflateProtocol,
        "ws_per_message_deflate": True,
        # Slow or stuck clients must not hold sockets: a deadline for request heads,
        # and a 503 (not an accept failure) beyond the connections the descriptors allow.
        "http": HeaderTimeoutProtocol.with_timeout(settings.header_timeout_s),
        "limit_concurrency": max_connections(settings),
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": 5,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve(settings: Settings, log_level: str = "info") -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    heap.keep_freed_memory()  # uploads and downloads: large short-lived buffers
    uvicorn.Server(uvicorn_config(create_app(settings), settings, log_level)).run()
    return 0
