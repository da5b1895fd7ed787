"""Run the coordinator under uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from coordinator.app import create_app
from coordinator.settings import Settings


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
        # No permessage-deflate: one socket read of compressed frames would inflate
        # into hundreds of queued 1 MiB messages before reading pauses (a
        # compression bomb past every upload limit); GLB and PNG barely compress.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 5,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve(settings: Settings, log_level: str = "info") -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.Server(uvicorn_config(create_app(settings), settings, log_level)).run()
    return 0
