"""WebSocket close codes of the agent link, the same numbers on both sides.

See ``docs/protocol.md`` §9 for what an agent does on each.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Why a connection ended; the 4xxx codes are the protocol's own (RFC 6455 §7.4.2)."""

    NORMAL = 1000
    """Normal closure (e.g. a drain lifted: reconnect to be offered work again)."""
    GOING_AWAY = 1001
    """The coordinator or agent shuts down, or an admin disconnected the agent: reconnect."""
    POLICY_VIOLATION = 1008
    """Authentication refused by something in front of the coordinator: stop."""
    MESSAGE_TOO_BIG = 1009
    """A frame over ``max_frame_bytes`` (sent by the WebSocket library)."""
    PROTOCOL_ERROR = 4400
    """After an ``error`` message naming the broken rule: reconnect with backoff."""
    BAD_TOKEN = 4401
    """Unknown, invalid or revoked token (or the owner's account deleted): stop."""
    NOT_ALLOWED = 4403
    """The owner's account is suspended: retry slowly, an unban lets the agent back in."""
    REPLACED = 4409
    """A newer connection of the same agent replaced this one: reconnect with backoff."""
