"""The translation catalogs: complete, current, and every template's text marked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

import webui
from coordinator import i18n
from tests.support.coordinators import ROOT
from tests.support.i18ncheck import untranslated, untranslated_in

LOCALES = ROOT / "webui" / "locale"
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "Refusal": (2,)}  # as scripts/i18n extracts
SKIPPED_DIRS = {"node_modules", "__pycache__"}


def extracted() -> set[str | tuple[str, str]]:
    """Every marked message in the sources now, keyed like the catalogs' entries."""
    with open(ROOT / "babel.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)

    def wanted(path: str | os.PathLike[str]) -> bool:
        name = os.path.basename(path)
        return not name.startswith(".") and name not in SKIPPED_DIRS

    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        ROOT, method_map, options_map, keywords=KEYWORDS, directory_filter=wanted
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        found.add((context, msgid) if context else msgid)
    return found


def catalogs() -> list[tuple[str, Catalog]]:
    found = []
    for po in sorted(LOCALES.glob("*/LC_MESSAGES/messages.po")):
        with po.open("rb") as fh:
            found.append((po.parent.parent.name, read_po(fh)))
    return found


def key(message: object) -> str | tuple[str, str]:
    msgid = message.id  # type: ignore[attr-defined]
    text = msgid[0] if isinstance(msgid, tuple | list) else msgid
    context = message.context  # type: ignore[attr-defined]
    return (context, text) if context else text


def test_locale_catalogs_exist_for_english_and_russian() -> None:
    assert {lang for lang, _ in catalogs()} >= {"en", "ru"}


@pytest.mark.parametrize("lang", [lang for lang, _ in catalogs()])
def test_locale_catalog_matches_the_sources(lang: str) -> None:
    """Run ``scripts/i18n update`` when this fails: the .po must hold exactly the
    messages the code and templates mark, nothing fuzzy, nothing obsolete."""
    catalog = dict(catalogs())[lang]
    entries = {key(m) for m in catalog if m.id}
    sources = extracted()
    assert not sources - entries, f"not in {lang}.po (run scripts/i18n update)"
    assert not entries - sources, f"{lang}.po has messages no source uses any more"
    assert not catalog.obsolete, f"obsolete entries in {lang}.po: {list(catalog.obsolete)[:5]}"
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not fuzzy, f"fuzzy entries in {lang}.po: {fuzzy[:5]}"


@pytest.mark.parametrize("lang", [lang for lang, _ in catalogs() if lang != "en"])
def test_locale_every_message_is_translated(lang: str) -> None:
    catalog = dict(catalogs())[lang]
    missing = []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = catalog.num_plurals if message.pluralizable else 1
        if len(strings) != wanted or not all(strings):
            missing.append(message.id)
    assert not missing, f"{len(missing)} untranslated in {lang}.po, e.g. {missing[:5]}"
    # Placeholders of every translation match the original's (Babel's checkers).
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert not problems, problems[:5]


def test_locale_russian_plural_forms() -> None:
    i18n.load_catalogs()
    i18n.activate("ru")
    try:
        forms = {
            n: i18n.ngettext("%(num)s model.", "%(num)s models.", n) % {"num": n}
            for n in (1, 2, 5, 11, 21, 22, 25, 101)
        }
    finally:
        i18n.activate("en")
    assert forms == {
        1: "1 модель.",
        2: "2 модели.",
        5: "5 моделей.",
        11: "11 моделей.",
        21: "21 модель.",
        22: "22 модели.",
        25: "25 моделей.",
        101: "101 модель.",
    }


def test_locale_templates_have_no_unmarked_text() -> None:
    findings = untranslated_in(webui.TEMPLATES)
    assert not findings, "text not marked for translation:\n" + "\n".join(map(str, findings))


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("<p>Hello there</p>", ["Hello there"]),
        ("<h1>{{ _('Title') }}</h1> <p>and more</p>", ["and more"]),
        ('<input placeholder="e.g. a chair">', ["e.g. a chair"]),
        ('<button aria-label="Close it">{{ _("Close") }}</button>', ["Close it"]),
        ('<form data-confirm="Sure?"></form>', ["Sure?"]),
        ('<input type="submit" value="Send">', ["Send"]),
        ("<p>{{ 'Literal words' }}</p>", ["Literal words"]),
        ("<p>{{ job.error or 'It failed.' }}</p>", ["It failed."]),
        ("<p>{{ 'Yes' if ok else 'No' }}</p>", ["Yes", "No"]),
        ("<p>{{ 'Count: %s'|format(n) }}</p>", ["Count: %s"]),
        ('{{ action(a, "revoke", "Revoke it", "danger") }}', ["Revoke it"]),
        ("<p title=\"{{ 'Hover text' }}\">x</p>", ["Hover text", "x"]),
        ("{% block title %}Home page{% endblock %}", ["Home page"]),
    ],
)
def test_locale_check_finds_unmarked_text(source: str, found: list[str]) -> None:
    assert [f.text for f in untranslated(source)] == found


@pytest.mark.parametrize(
    "source",
    [
        "<p>{{ _('Marked') }}</p>",
        "<p>{{ ngettext('%(num)s model', '%(num)s models', n) }}</p>",
        "<p>{% trans %}Marked block{% endtrans %}</p>",
        "<p>{% trans count=n %}{{ count }} item{% pluralize %}{{ count }} items{% endtrans %}</p>",
        "<p><code>Authorization: Bearer</code> <pre>pip install shapefarm</pre></p>",
        '<input type="hidden" name="visibility" value="{{ \'private\' if p else \'public\' }}">',
        '<a href="/x" class="button secondary" id="the-link">{{ _("Go") }}</a>',
        "<p>{{ user.email or '—' }} · {{ count }} / {{ total }}</p>",
        "{# a comment with words #}<title>shapefarm</title>",
        '{% if state == "queued" %}<p>{{ x|job_state }}</p>{% endif %}',
        "<script>const words = 'not shown';</script>",
    ],
)
def test_locale_check_accepts_marked_and_technical_text(source: str) -> None:
    assert untranslated(source) == []


def test_locale_stale_catalog_is_compiled(tmp_path: Path) -> None:
    po = tmp_path / "ru" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    po.write_bytes((LOCALES / "ru" / "LC_MESSAGES" / "messages.po").read_bytes())
    mo = po.with_suffix(".mo")
    loaded = i18n.load_catalogs(tmp_path)
    assert mo.exists() and loaded["ru"].gettext("Log in") == "Войти"
    # An edited .po (newer than its .mo) is compiled again.
    po.write_text(po.read_text().replace('msgstr "Войти"', 'msgstr "Вход!"'))
    os.utime(mo, (1, 1))
    assert i18n.load_catalogs(tmp_path)["ru"].gettext("Log in") == "Вход!"
    # A read-only directory still gets its catalog, compiled in memory.
    mo.unlink()
    po.parent.chmod(0o500)
    try:
        assert i18n.load_catalogs(tmp_path)["ru"].gettext("Log in") == "Вход!"
    finally:
        po.parent.chmod(0o700)
        i18n.load_catalogs()
