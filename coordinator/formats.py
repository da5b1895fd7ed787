"""Dates, numbers, durations and relative times in the request's language (Babel).

Each is a Jinja filter too (see ``web.make_templates``); times are UTC epoch
seconds, as everywhere in the coordinator, and are written in UTC; pages wrap them
in ``<time>`` (the ``localtime`` filter) for the browser to show in local time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from babel import dates, numbers, units
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

from coordinator import i18n

DATETIME_SKELETON = "yMMMd"  # "Dec 2, 2026" / "2 дек. 2026 г."
TIME_SKELETON = "Hm"  # 24-hour "16:44" in every language


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def format_datetime(epoch: float | None) -> str:
    """A date and time in UTC, e.g. "Dec 2, 2026, 16:44 UTC" / "2 дек. 2026 г., 16:44 UTC"."""
    if epoch is None:
        return "—"
    lang = i18n.current()
    moment = _utc(epoch)
    day = dates.format_skeleton(DATETIME_SKELETON, moment, tzinfo=dt.UTC, locale=lang)
    clock = dates.format_skeleton(TIME_SKELETON, moment, tzinfo=dt.UTC, locale=lang)
    return f"{day}, {clock} UTC"


def time_tag(epoch: float | None) -> Markup | str:
    """``<time>`` for a page: the UTC text (what a page without JavaScript shows, and
    the hover title), which ``webui/static/app.js`` rewrites in the viewer's time zone."""
    if epoch is None:
        return "—"
    utc = escape(format_datetime(epoch))
    return Markup('<time datetime="{}" title="{}" data-local>{}</time>').format(
        iso(epoch), utc, utc
    )


def format_date(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return dates.format_skeleton(
        DATETIME_SKELETON, _utc(epoch), tzinfo=dt.UTC, locale=i18n.current()
    )


def iso(epoch: float | None) -> str:
    """Machine-readable UTC time for ``<time datetime>``."""
    return "" if epoch is None else _utc(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_number(value: float | int | None, digits: int = 0) -> str:
    """A number with the language's separators and ``digits`` decimals
    ("12,345.5" / "12 345,5")."""
    if value is None:
        return "—"
    if digits <= 0:
        return numbers.format_decimal(round(value), locale=i18n.current())
    pattern = "#,##0." + "0" * digits
    return numbers.format_decimal(value, format=pattern, locale=i18n.current())


def format_duration(seconds: float | None) -> str:
    """An exact short duration: "45 s", "2 min 5 s", "1 h 3 min" / "2 мин 5 с"."""
    if seconds is None:
        return i18n.gettext("unknown")
    total = max(0, round(seconds))
    lang = i18n.current()
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        parts = [(hours, "duration-hour"), (minutes, "duration-minute")]
    elif minutes:
        parts = [(minutes, "duration-minute"), (secs, "duration-second")]
    else:
        parts = [(secs, "duration-second")]
    return " ".join(units.format_unit(n, unit, length="short", locale=lang) for n, unit in parts)


def format_span(seconds: float | None) -> str:
    """A rounded length of time in the largest fitting unit: "2 weeks" / "2 недели"."""
    if seconds is None:
        return "—"
    return dates.format_timedelta(
        dt.timedelta(seconds=max(0.0, seconds)), threshold=1.0, locale=i18n.current()
    )


def format_ago(epoch: float | None, now: float) -> str:
    """How long ago (or until) ``epoch`` is from ``now``: "3 minutes ago" / "3 минуты назад"."""
    if epoch is None:
        return "—"
    delta = dt.timedelta(seconds=epoch - now)
    if abs(delta.total_seconds()) < 45:
        return i18n.gettext("just now")
    return dates.format_timedelta(delta, add_direction=True, threshold=0.9, locale=i18n.current())


def format_money(amount: Any, currency: str) -> str:
    """A price in the language's form ("€4.90" / "4,90 €")."""
    return numbers.format_currency(amount, currency, locale=i18n.current())


@pass_context
def ago_filter(context: Context, epoch: float | None) -> str:
    """``{{ job.created_at | ago }}``: relative to the farm's clock when the page has one."""
    farm: Any = context.get("farm")
    now = farm.clock() if farm is not None else dt.datetime.now(dt.UTC).timestamp()
    return format_ago(epoch, float(now))


FILTERS: dict[str, Any] = {
    "datetime": format_datetime,
    "localtime": time_tag,
    "date": format_date,
    "iso": iso,
    "number": format_number,
    "duration": format_duration,
    "span": format_span,
    "ago": ago_filter,
    "money": format_money,
}
