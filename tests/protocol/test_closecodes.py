"""CloseCode: the close codes both peers use, and the table docs/protocol.md documents."""

from __future__ import annotations

import re
from pathlib import Path

from protocol import CloseCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented() -> dict[int, str]:
    rows = re.findall(r"^\| (\d{4}) \| `([A-Z_]+)` \|", DOC.read_text(), re.MULTILINE)
    return {int(code): name for code, name in rows}


def test_closecode_every_code_documented_under_its_name() -> None:
    assert documented() == {code.value: code.name for code in CloseCode}


def test_closecode_protocol_codes_in_the_private_range() -> None:
    # RFC 6455 §7.4.2: 4000-4999 are for applications; the rest are the standard's.
    ours = {c for c in CloseCode if c >= 4000}
    assert ours == {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.BAD_TOKEN,
        CloseCode.NOT_ALLOWED,
        CloseCode.REPLACED,
    }
    assert all(c < 5000 for c in ours)
    assert CloseCode.BAD_TOKEN == 4401  # the number on the wire is part of the protocol
