"""Entry points: ``shapefarm`` (coordinator, admin, demo) and the server runner."""

from __future__ import annotations

from coordinator.cli.main import main

__all__ = ["main"]
