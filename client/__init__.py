"""A Python client of shapefarm's JSON API (standard library only): see docs/api.md."""

from __future__ import annotations

from client.api import DEFAULT_MAX_DOWNLOAD, ApiError, Client, ClientError

__all__ = ["DEFAULT_MAX_DOWNLOAD", "ApiError", "Client", "ClientError"]
