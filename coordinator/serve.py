"""Run the coordinator under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from coordinator.app import create_app
from coordinator.settings import Settings


def serve(settings: Settings, log_level: str = "info") -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        ws_max_size=settings.max_frame_bytes,
        timeout_graceful_shutdown=5,
    )
    return 0
