"""Find text in a Jinja template that a user would see but that is not marked for
translation: literal HTML text, visible attributes (title, alt, placeholder,
aria-label, data-confirm, button values) and string constants an ``{{ }}``
prints or hands to a macro, outside ``_()``/``gettext``/``{% trans %}``.

Text inside ``<code>``, ``<pre>``, ``<kbd>``, ``<samp>``, ``<script>`` and
``<style>`` is technical and skipped, as are the few names in :data:`ALLOWED`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from jinja2 import Environment, nodes

ALLOWED = ("shapefarm", "Shap-E", "GLB", "OBJ", "STL", "PLY", "CUDA")
GETTEXT = {"_", "gettext", "ngettext", "pgettext", "npgettext"}
VISIBLE_ATTRS = {"title", "alt", "placeholder", "aria-label", "data-confirm", "label"}
SKIPPED_ELEMENTS = {"code", "pre", "kbd", "samp", "script", "style"}
LETTER = re.compile(r"[^\W\d_]")
TRANS_BLOCK = re.compile(r"{%-?\s*trans\b.*?{%-?\s*endtrans\s*-?%}", re.S)
COMMENT = re.compile(r"{#.*?#}", re.S)
OUTPUT = re.compile(r"{{-?(.*?)-?}}", re.S)
STATEMENT = re.compile(r"{%.*?%}", re.S)
PLACEHOLDER = re.compile(r"\x02(\d+)\x02")

_ENV = Environment(extensions=["jinja2.ext.i18n"])


@dataclass(frozen=True)
class Finding:
    template: str
    text: str

    def __str__(self) -> str:
        return f"{self.template}: {self.text!r}"


def _prose(value: str) -> bool:
    """A macro argument that reads like words for people, not a keyword."""
    return bool(LETTER.search(value)) and (value != value.lower() or " " in value.strip())


def loose_strings(node: nodes.Node, printed: bool = True) -> list[str]:
    """String constants that ``node`` may print without translating them."""
    if isinstance(node, nodes.Const):
        return [node.value] if isinstance(node.value, str) and printed else []
    if isinstance(node, nodes.CondExpr):
        found = loose_strings(node.expr1, printed)
        return found + (loose_strings(node.expr2, printed) if node.expr2 is not None else [])
    if isinstance(node, nodes.And | nodes.Or):
        return loose_strings(node.left, printed) + loose_strings(node.right, printed)
    if isinstance(node, nodes.Concat):
        return [s for part in node.nodes for s in loose_strings(part, printed)]
    if isinstance(node, nodes.Filter):
        return loose_strings(node.node, printed) if node.node is not None else []
    if isinstance(node, nodes.Call):
        if isinstance(node.node, nodes.Name) and node.node.name in GETTEXT:
            return []
        args = [*node.args, *(kw.value for kw in node.kwargs)]
        found = [s for arg in args for s in loose_strings(arg, printed)]
        return [s for s in found if _prose(s)]
    return []


def _expression_strings(source: str) -> list[str]:
    body = _ENV.parse("{{" + source + "}}").body
    return [
        s
        for out in body
        if isinstance(out, nodes.Output)
        for n in out.nodes
        for s in loose_strings(n)
    ]


def _has_words(text: str) -> bool:
    for name in ALLOWED:
        text = text.replace(name, " ")
    return bool(LETTER.search(text))


class _Probe(HTMLParser):
    def __init__(self, strings: list[list[str]]) -> None:
        super().__init__(convert_charrefs=True)
        self.strings = strings
        self.skipping = 0
        self.found: list[str] = []

    def _check(self, text: str) -> None:
        for match in PLACEHOLDER.finditer(text):
            self.found.extend(s for s in self.strings[int(match.group(1))] if _has_words(s))
        rest = PLACEHOLDER.sub(" ", text).replace("\x01", " ")
        if _has_words(rest):
            self.found.append(" ".join(rest.split()))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_ELEMENTS:
            self.skipping += 1
        values = dict(attrs)
        button = tag == "button" or (
            tag == "input" and values.get("type") in ("submit", "button", "reset")
        )
        for name, value in attrs:
            if value and (name in VISIBLE_ATTRS or (name == "value" and button)):
                self._check(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_ELEMENTS and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self._check(data)


def untranslated(source: str, name: str = "<template>") -> list[Finding]:
    """Every piece of visible, unmarked text in one template's source."""
    strings: list[list[str]] = []

    def output(match: re.Match[str]) -> str:
        strings.append(_expression_strings(match.group(1)))
        return f"\x02{len(strings) - 1}\x02"

    probe_source = COMMENT.sub("", source)
    probe_source = TRANS_BLOCK.sub("\x01", probe_source)
    probe_source = OUTPUT.sub(output, probe_source)
    probe_source = STATEMENT.sub("", probe_source)
    probe = _Probe(strings)
    probe.feed(probe_source)
    probe.close()
    return [Finding(name, text) for text in probe.found]


def untranslated_in(root: Path) -> list[Finding]:
    """:func:`untranslated` over every ``*.html`` under ``root``."""
    return [
        finding
        for path in sorted(root.rglob("*.html"))
        for finding in untranslated(path.read_text(), str(path.relative_to(root)))
    ]
