from __future__ import annotations

from coordinator import formats, i18n


def test_time_tag_carries_utc_for_the_browser_to_localise() -> None:
    i18n.activate("en")
    tag = str(formats.time_tag(1_796_000_000.0))
    assert tag == (
        '<time datetime="2026-11-30T00:53:20Z" title="Nov 30, 2026, 00:53 UTC" data-local>'
        "Nov 30, 2026, 00:53 UTC</time>"
    )
    assert formats.time_tag(None) == "—"
