"""Which webhook URLs the coordinator will call: public addresses only, unless allowed."""

from __future__ import annotations

import pytest

from coordinator.services.outbound import WebhookError, check_url, resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:9000/hook",
        "http://0.0.0.0/hook",
        "ftp://example.org/hook",
        "https://user:pw@example.org/hook",
        "not a url",
        "https://example.org/" + "x" * 3000,
    ],
)
def test_webhooks_refuse_private_and_malformed_urls(url: str) -> None:
    with pytest.raises(WebhookError):
        check_url(url, allow_private=False)


async def test_webhooks_names_are_checked_where_they_resolve() -> None:
    assert check_url(" https://example.org/hook ", allow_private=False) == (
        "https://example.org/hook"
    )
    with pytest.raises(WebhookError, match="must be public"):
        await resolve("localhost", 80, allow_private=False)  # a name that resolves inward
    assert await resolve("127.0.0.1", 80, allow_private=True) == "127.0.0.1"
