from __future__ import annotations

from pathlib import Path

import pytest

from agent.blocklist import MAX_FILE_BYTES, BlocklistError, load_blocklist, parse_blocklist


def test_blocklist_words_match_whole_words_case_insensitively() -> None:
    blocklist = parse_blocklist("# comment\n\ngun\nbaseball bat\n")
    assert len(blocklist) == 2
    assert blocklist.match("A toy GUN on a table") == "gun"
    assert blocklist.match("gun!") == "gun"
    assert blocklist.match("it has begun") is None
    assert blocklist.match("a Baseball  Bat") is None  # phrases match as written
    assert blocklist.match("a baseball bat") == "baseball bat"


def test_blocklist_regular_expressions_with_groups_and_backreferences() -> None:
    blocklist = parse_blocklist(r"re:^evil\b" + "\n" + r"re:(\w)\1{3}" + "\n")
    assert blocklist.match("Evil chair") == r"re:^evil\b"
    assert blocklist.match("a chair, evil") is None
    assert blocklist.match("zzzz") == r"re:(\w)\1{3}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok\nre:([unclosed\n", "blocked.txt:2: invalid regular expression"),
        ("re:\n", "needs a regular expression"),
        ("x" * 1001 + "\n", "longer than 1000"),
    ],
)
def test_blocklist_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(BlocklistError, match=message):
        parse_blocklist(text, "blocked.txt")


def test_blocklist_file_limits(tmp_path: Path) -> None:
    with pytest.raises(BlocklistError, match="cannot read"):
        load_blocklist(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_bytes(b"a\n" * (MAX_FILE_BYTES // 2 + 1))
    with pytest.raises(BlocklistError, match="larger than"):
        load_blocklist(big)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BlocklistError, match="not UTF-8"):
        load_blocklist(binary)
