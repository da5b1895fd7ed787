"""The one error type of actions (admin console, volunteer page, admin CLI)."""

from __future__ import annotations


class ActionError(ValueError):
    """An action that cannot be done as asked; the message is shown to whoever asked.

    Views answer it with 409 (or 422 for bad input), the admin CLI prints it and exits 1.
    Each service names its own subclass, so a caller can still tell them apart."""
