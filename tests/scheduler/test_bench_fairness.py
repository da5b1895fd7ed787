"""bench/fairness.py: runs small, and --write-docs replaces only its own section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fairness.py"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fairness", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_fairness", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_bench_fairness_small_run_writes_its_section(
    bench: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(
        "# Benchmarks\n\n## Agent\n\nkeep me\n\n## Scheduling\n\nold\n\n## Zeta\n\nme too\n"
    )
    monkeypatch.setattr(bench, "DOCS", docs)
    argv = ["--users", "2", "--jobs", "30", "--agents", "2", "--plan-queue", "300", "--repeat", "1"]
    assert bench.main([*argv, "--write-docs"]) == 0
    out = capsys.readouterr().out
    assert "| free | 1 |" in out and "decisions/s" in out
    text = docs.read_text()
    assert "keep me" in text and "me too" in text and "old" not in text
    assert text.count("## Scheduling") == 1
    assert "python bench/fairness.py --users 2" in text


def test_bench_fairness_creates_missing_docs(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    monkeypatch.setattr(bench, "DOCS", docs)
    bench.write_docs("table\n")
    assert docs.read_text() == "# Benchmarks\n\n## Scheduling\n\ntable\n"


def test_bench_fairness_help_exits_cleanly(bench: ModuleType) -> None:
    with pytest.raises(SystemExit) as info:
        bench.main(["--help"])
    assert info.value.code == 0
