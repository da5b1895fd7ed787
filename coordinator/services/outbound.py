"""Where the coordinator may send requests that users choose (webhook URLs).

A URL must be http(s) without credentials, and its host must resolve only to public
addresses: loopback, private, link-local (cloud metadata), CGNAT, reserved, multicast
and ``localhost`` are refused unless the operator allows non-public addresses. Checked
when a URL is saved (address literals) and before every request (names), which then
goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL = 2000


class WebhookError(ValueError):
    """A webhook URL we will not call; the message is safe to show."""


def _check_address(text: str, allow_private: bool) -> None:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_multicast or address.is_unspecified:
        raise WebhookError(f"{address} cannot receive webhooks")
    if not allow_private and not address.is_global:
        raise WebhookError(
            f"webhook addresses must be public; {address} is loopback, private or reserved"
        )


def check_url(url: str, allow_private: bool) -> str:
    """The URL, stripped, if its form may be called; else :class:`WebhookError`."""
    url = url.strip()
    if len(url) > MAX_URL:
        raise WebhookError(f"webhook URLs are at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("a webhook URL starts with https:// (or http://) and names a host")
    if parts.username or parts.password:
        raise WebhookError("webhook URLs may not carry a user name or password")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise WebhookError("webhook URLs may not contain spaces or control characters")
    if port == 0:
        raise WebhookError("port 0 cannot receive webhooks")
    try:
        ipaddress.ip_address(parts.hostname.split("%", 1)[0])
    except ValueError:
        pass  # a name, not an address literal: checked where it resolves, at each attempt
    else:
        _check_address(parts.hostname, allow_private)
        return url
    if parts.hostname.rstrip(".").lower().endswith("localhost") and not allow_private:
        raise WebhookError("webhook addresses must be public; localhost is not")
    return url


async def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to call for ``host``: every address it resolves to must be allowed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookError(f"cannot resolve {host}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise WebhookError(f"{host} has no address")
    for address in addresses:
        _check_address(address, allow_private)
    return addresses[0]
