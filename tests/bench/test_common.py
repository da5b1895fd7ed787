"""bench/common.py: the docs writer replaces only its own sections, idempotently."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import common

OTHERS = "# Benchmarks\n\n## Scheduling\n\nsomeone else's table\n\n## Generation\n\nand theirs\n"


def test_write_section_replaces_only_its_own_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(OTHERS)
    monkeypatch.setattr(common, "DOCS", docs)

    def write_all(tag: str) -> str:
        common.write_section("Dispatch and throughput", f"latency {tag}\n", "Dispatch latency")
        common.write_section("Scale", f"scale {tag}\n")
        common.write_section("Dispatch and throughput", f"rate {tag}\n", "Throughput")
        return docs.read_text()

    first = write_all("1")
    assert first.startswith(OTHERS)
    assert first[len(OTHERS) :] == (
        "\n## Dispatch and throughput\n\n### Dispatch latency\n\nlatency 1\n\n"
        "### Throughput\n\nrate 1\n\n## Scale\n\nscale 1\n"
    )
    assert write_all("2") == first.replace(" 1\n", " 2\n")


def test_write_section_keeps_an_intro_and_later_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "benchmarks.md"
    before = "# B\n\n## Dispatch and throughput\n\nintro\n\n### Throughput\n\nold\n\n## X\n\nx\n"
    docs.write_text(before)
    monkeypatch.setattr(common, "DOCS", docs)
    common.write_section("Dispatch and throughput", "new\n", "Throughput")
    assert docs.read_text() == before.replace("old", "new")
