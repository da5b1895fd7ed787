"""Content the owner will not run: a word / regular-expression blocklist file.

One entry per line; blank lines and lines starting with ``#`` are ignored.
A plain line is a word or phrase, matched case-insensitively on word
boundaries (``gun`` blocks "a gun" but not "begun"). A line starting with
``re:`` is a Python regular expression, matched case-insensitively anywhere in
the prompt. A blocked job is declined (protocol ``declined``/``blocked``) and
goes to another agent; it never fails for its user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024
MAX_ENTRIES = 10_000
MAX_PATTERN_CHARS = 1000


class BlocklistError(ValueError):
    """The blocklist file cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Blocklist:
    path: Path | None
    entries: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def match(self, prompt: str) -> str | None:
        """The first entry that blocks ``prompt`` (for the owner's log), or None."""
        for entry, pattern in zip(self.entries, self.patterns, strict=True):
            if pattern.search(prompt):
                return entry
        return None

    def __len__(self) -> int:
        return len(self.entries)


EMPTY = Blocklist(None, (), ())


def parse_blocklist(text: str, source: str = "blocklist") -> Blocklist:
    entries: list[str] = []
    patterns: list[re.Pattern[str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_PATTERN_CHARS:
            raise BlocklistError(f"{source}:{number}: longer than {MAX_PATTERN_CHARS} characters")
        if line.startswith("re:"):
            expression = line[3:].strip()
            if not expression:
                raise BlocklistError(f"{source}:{number}: 're:' needs a regular expression")
        else:
            expression = r"(?<!\w)" + re.escape(line) + r"(?!\w)"
        try:
            patterns.append(re.compile(expression, re.IGNORECASE))
        except re.error as exc:
            raise BlocklistError(f"{source}:{number}: invalid regular expression: {exc}") from None
        entries.append(line)
        if len(entries) > MAX_ENTRIES:
            raise BlocklistError(f"{source}: more than {MAX_ENTRIES} entries")
    return Blocklist(None, tuple(entries), tuple(patterns))


def load_blocklist(path: Path) -> Blocklist:
    """Read and parse a blocklist file; raises :class:`BlocklistError`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BlocklistError(f"cannot read the blocklist {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BlocklistError(f"the blocklist {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BlocklistError(f"the blocklist {path} is not UTF-8 text") from None
    parsed = parse_blocklist(text, str(path))
    return Blocklist(path, parsed.entries, parsed.patterns)
