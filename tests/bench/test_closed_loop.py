"""bench/closed_loop.py: its command line is checked before anything runs; peers run interleaved.

The peers are stand-ins (tests/support/fake_peers.py): the real Gradio and Celery live in
a virtualenv outside the project and are not installed here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import closed_loop
from tests.support.fake_peers import fake_peers


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the benchmark, expecting a usage error; its message."""
    with pytest.raises(SystemExit) as exited:
        closed_loop.main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_unknown_systems_and_bad_numbers_are_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peers = fake_peers(tmp_path, monkeypatch)
    common = ["--peers-dir", str(peers.dir), "--peers-python", sys.executable]
    error = refused(["--systems", "gradio,gradoi", *common], capsys)
    assert "unknown system(s) 'gradoi'" in error
    assert "shapefarm, before, celery, gradio" in error
    assert "-n: each value must be at least 1: '0'" in refused(["-n", "0", *common], capsys)
    assert "--sizes: not a comma-separated list" in refused(["--sizes", "10,x", *common], capsys)
    assert "--rounds: one integer" in refused(["--rounds", "1,2", *common], capsys)
    error = refused(["--systems", "before", "--before-root", str(tmp_path)], capsys)
    assert "holds no coordinator/" in error
    assert peers.runs() == []  # gradio was named first, and still nothing ran


def test_gradio_is_refused_when_the_peers_python_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peers = fake_peers(tmp_path, monkeypatch, modules=("gradio", "celery", "redis"))
    common = ["--peers-dir", str(peers.dir), "--peers-python", sys.executable]
    error = refused(["--systems", "shapefarm,gradio", *common], capsys)
    assert f"gradio: --peers-python {sys.executable} has no gradio_client;" in error
    assert "not the project's" in error
    error = refused(["--systems", "gradio", "--peers-python", str(tmp_path / "nope")], capsys)
    assert f"--peers-python {tmp_path / 'nope'} cannot run" in error
    (peers.dir / "gradio_peer.py").unlink()
    error = refused(["--systems", "celery,gradio", *common], capsys)
    assert f"gradio: {peers.dir / 'gradio_peer.py'} does not exist" in error
    monkeypatch.setenv("PATH", str(tmp_path / "peer-packages"))  # no redis-server there
    error = refused(["--systems", "celery", *common], capsys)
    assert "celery: redis-server is not on PATH" in error
    assert peers.runs() == []


def test_the_projects_own_python_has_no_gradio(capsys: pytest.CaptureFixture[str]) -> None:
    """The default peers run must not find gradio in the project's virtualenv."""
    if importlib.util.find_spec("gradio") is not None:
        pytest.skip("this Python has gradio")
    error = refused(["--systems", "gradio", "--peers-python", sys.executable], capsys)
    assert "has no gradio" in error or "does not exist" in error  # no shared/peers here


def test_peers_run_interleaved_with_the_workload_and_a_scratch_dir_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peers = fake_peers(tmp_path, monkeypatch)
    argv = ["-n", "7", "-c", "3", "-w", "2", "--warmup", "1", "--sizes", "1000,2000",
            "--rounds", "2", "--systems", "gradio,celery", "--peers-dir", str(peers.dir),
            "--peers-python", sys.executable]  # fmt: skip
    assert closed_loop.main(argv) == 0
    runs = peers.runs()
    order = [(r["script"], r["size"] or r["argv"][r["argv"].index("--size") + 1]) for r in runs]
    assert order == [("gradio_peer.py", "1000"), ("celery_peer.py", "1000"),
                     ("gradio_peer.py", "2000"), ("celery_peer.py", "2000")] * 2  # fmt: skip
    workload = ["-n", "7", "-c", "3", "-w", "2", "--warmup", "1"]
    for run in runs:
        assert run["argv"][:8] == workload
        assert run["scratch_existed"] and not Path(run["scratch"]).exists()
        assert run["cwd"] == str(peers.dir)
        if run["script"] == "gradio_peer.py":
            assert run["argv"][8:10] in (["--size", "1000"], ["--size", "2000"])
            assert run["argv"][10] == "--port" and int(run["argv"][11]) > 0
        else:
            assert len(run["argv"]) == 8 and int(run["redis_port"]) > 0
    assert len({r["scratch"] for r in runs}) == len(runs)
    out = capsys.readouterr().out
    assert "| 2 | Gradio + gradio_client | 2000 B | 12.5 | 100 ms | 200 ms | (142.9 ms) |" in out
    assert "| 1 | Celery + Redis | 1000 B | 12.5 |" in out
    assert "Peers: fake 1.0." in out


def test_a_failing_peer_stops_the_run_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = fake_peers(tmp_path, monkeypatch)
    peers.write("gradio", 'import json\nprint(json.dumps({"error": "ConnectError()"}))\n')
    argv = ["--systems", "celery,gradio", "--sizes", "1000", "--peers-dir", str(peers.dir),
            "--peers-python", sys.executable]  # fmt: skip
    with pytest.raises(SystemExit, match=r"closed_loop: gradio peer: ConnectError\(\); logs in"):
        closed_loop.main(argv)
    assert [r["script"] for r in peers.runs()] == ["celery_peer.py"]


def test_ratios_are_given_against_each_peer_from_adjacent_runs() -> None:
    def runs(*figures: tuple[float, float]) -> list[dict[str, Any]]:
        return [{"jobs_per_s": rate, "p99_ms": p99} for rate, p99 in figures]

    results = {
        ("shapefarm", 10240): runs((50, 200), (40, 300), (60, 100)),
        ("celery", 10240): runs((250, 40), (400, 30), (300, 50)),
        ("gradio", 10240): runs((10, 1000), (8, 1500), (15, 1000)),
        ("shapefarm", 2**20): runs((30, 400)),
        ("gradio", 2**20): runs((10, 1600)),
    }
    text = closed_loop._ratios(results, [10240, 2**20], ["shapefarm", "celery", "gradio"])
    assert text.splitlines()[2:] == [
        "- 10 KiB vs celery: jobs/s ×0.20, 0.10, 0.20 (median ×0.20); "
        "p99 ×5.00, 10.00, 2.00 (median ×5.00)",
        "- 10 KiB vs gradio: jobs/s ×5.00, 5.00, 4.00 (median ×5.00); "
        "p99 ×0.20, 0.20, 0.10 (median ×0.20)",
        "- 1 MiB vs gradio: jobs/s ×3.00; p99 ×0.25",
    ]
