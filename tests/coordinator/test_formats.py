"""Dates, numbers, durations and relative times per language (coordinator.formats)."""

from __future__ import annotations

from coordinator import formats, i18n

DAY = 1_764_633_600.0  # 2025-12-02 00:00 UTC


def plain(text: str) -> str:
    """CLDR separates some parts with (narrow) no-break spaces."""
    return text.replace("\N{NO-BREAK SPACE}", " ").replace("\N{NARROW NO-BREAK SPACE}", " ")


def both(fn: object, *args: object) -> tuple[str, str]:
    i18n.load_catalogs()
    results = []
    for lang in ("en", "ru"):
        with i18n.using(lang):
            results.append(fn(*args))  # type: ignore[operator]
    return results[0], results[1]


def test_formats_datetime_per_language() -> None:
    en, ru = both(formats.format_datetime, DAY + 16 * 3600 + 44 * 60)
    assert en == "Dec 2, 2025, 16:44 UTC"
    assert plain(ru) == "2 дек. 2025 г., 16:44 UTC"
    assert both(formats.format_datetime, None) == ("—", "—")


def test_formats_numbers_use_the_language_separators() -> None:
    en, ru = both(formats.format_number, 12345.5, 1)
    assert en == "12,345.5"
    assert plain(ru) == "12 345,5"
    assert both(formats.format_number, 24.0, 1) == ("24.0", "24,0")


def test_formats_durations_and_spans() -> None:
    assert both(formats.format_duration, 4) == ("4 sec", "4 с")
    assert both(formats.format_duration, 125) == ("2 min 5 sec", "2 мин 5 с")
    assert both(formats.format_duration, 3 * 3600 + 60) == ("3 hr 1 min", "3 ч 1 мин")
    assert both(formats.format_duration, None) == ("unknown", "неизвестно")
    assert both(formats.format_span, 14 * 86400) == ("2 weeks", "2 недели")


def test_formats_relative_times_with_russian_plurals() -> None:
    now = DAY
    assert both(formats.format_ago, now - 180, now) == ("3 minutes ago", "3 минуты назад")
    assert both(formats.format_ago, now - 300, now) == ("5 minutes ago", "5 минут назад")
    assert both(formats.format_ago, now - 60, now) == ("1 minute ago", "1 минуту назад")
    assert both(formats.format_ago, now - 2 * 86400, now) == ("2 days ago", "2 дня назад")
    assert both(formats.format_ago, now - 10, now) == ("just now", "только что")
    assert both(formats.format_ago, now + 600, now) == ("in 10 minutes", "через 10 минут")


def test_formats_using_restores_the_language() -> None:
    i18n.load_catalogs()
    with i18n.using("ru"):
        assert i18n.gettext("Log in") == "Войти"
        with i18n.using("xx"):  # unknown: English
            assert i18n.current() == "en"
        assert i18n.current() == "ru"
    assert i18n.current() == "en"


def test_formats_prompt_hint_only_without_latin_letters() -> None:
    assert i18n.needs_english_hint("красный стул")
    assert i18n.needs_english_hint("赤い椅子")
    assert not i18n.needs_english_hint("a red chair")
    assert not i18n.needs_english_hint("стул chair")
    assert not i18n.needs_english_hint("1234 !!")
    assert not i18n.needs_english_hint(None)


def test_time_tag_carries_utc_for_the_browser_to_localise() -> None:
    i18n.activate("en")
    tag = str(formats.time_tag(1_796_000_000.0))
    assert tag == (
        '<time datetime="2026-11-30T00:53:20Z" title="Nov 30, 2026, 00:53 UTC" data-local>'
        "Nov 30, 2026, 00:53 UTC</time>"
    )
    assert formats.time_tag(None) == "—"
