"""Weight download: free-space check, one progress bar over all files, resume, clear errors."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.weights import (
    DownloadBar,
    RemoteFile,
    WeightsError,
    fetch_weights,
    human_bytes,
    needs_download,
)

MB = 2**20
FILES = [
    RemoteFile("model_index.json", 1000, True),
    RemoteFile("prior/diffusion_pytorch_model.safetensors", 300 * MB, False),
    RemoteFile("shap_e_renderer/diffusion_pytorch_model.safetensors", 100 * MB, False),
]


class FakeDownloader:
    """Delivers files in 10 MB pieces; can break once after ``break_after`` bytes."""

    def __init__(self, files: Sequence[RemoteFile], break_after: int | None = None) -> None:
        self.files = {f.name: f for f in files}
        self.on_disk: dict[str, int] = {}  # partial (".incomplete") bytes kept by the cache
        self.break_after = break_after
        self.fetched: list[str] = []

    def plan(self, repo_id: str, cache_dir: Path | None) -> Sequence[RemoteFile]:
        return list(self.files.values())

    def fetch(
        self, repo_id: str, name: str, cache_dir: Path | None, progress: Callable[[int], None]
    ) -> None:
        size = self.files[name].size
        have = self.on_disk.get(name, 0)
        progress(have)  # like huggingface_hub's tqdm(initial=resume_size)
        while have < size:
            piece = min(10 * MB, size - have)
            if self.break_after is not None and have + piece > self.break_after:
                self.break_after = None
                raise ConnectionResetError("connection reset by peer")
            have += piece
            self.on_disk[name] = have
            progress(piece)
        self.fetched.append(name)
        self.files[name] = RemoteFile(name, size, True)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5  # every reading half a second later: 20 MB/s at 10 MB pieces
        return self.now


def roomy(path: str) -> SimpleNamespace:
    return SimpleNamespace(free=100 * 2**30)


def test_weights_download_shows_size_speed_and_eta_then_is_a_no_op(tmp_path: Path) -> None:
    downloader = FakeDownloader(FILES)
    out = io.StringIO()
    needed = fetch_weights(
        "openai/shap-e", tmp_path, downloader=downloader, disk_usage=roomy, stream=out,
        clock=Clock(), bar_enabled=True,
    )  # fmt: skip
    assert needed == 400 * MB
    assert downloader.fetched == [FILES[1].name, FILES[2].name]  # the cached one is skipped
    text = out.getvalue()
    assert "weights 10.0 MB/400.0 MB [" in text
    assert text.rstrip().endswith("ETA 0s")
    assert "MB/s" in text and "ETA" in text
    assert fetch_weights("openai/shap-e", tmp_path, downloader=downloader, disk_usage=roomy) == 0


def test_weights_refuses_to_start_without_the_disk_space(tmp_path: Path) -> None:
    downloader = FakeDownloader(FILES)

    def small(path: str) -> SimpleNamespace:
        return SimpleNamespace(free=200 * MB)

    with pytest.raises(WeightsError, match=r"need 400\.0 MB more, but only 200\.0 MB is free"):
        fetch_weights("openai/shap-e", tmp_path, downloader=downloader, disk_usage=small)
    assert downloader.fetched == [] and downloader.on_disk == {}


def test_weights_an_interrupted_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    downloader = FakeDownloader(FILES, break_after=150 * MB)
    with pytest.raises(WeightsError, match="resumes where it stopped"):
        fetch_weights(
            "openai/shap-e", tmp_path, downloader=downloader, disk_usage=roomy,
            stream=io.StringIO(),
        )  # fmt: skip
    assert downloader.on_disk[FILES[1].name] == 150 * MB
    out = io.StringIO()
    fetch_weights(
        "openai/shap-e", tmp_path, downloader=downloader, disk_usage=roomy, stream=out,
        clock=Clock(), bar_enabled=True,
    )  # fmt: skip
    # The bar starts from the 150 MB already there; speed counts only new bytes.
    assert "weights 150.0 MB/400.0 MB" in out.getvalue()
    assert out.getvalue().rstrip().split("\r")[-1].startswith("weights 400.0 MB/400.0 MB")


def test_weights_listing_failure_says_how_to_go_on(tmp_path: Path) -> None:
    class Offline(FakeDownloader):
        def plan(self, repo_id: str, cache_dir: Path | None) -> Sequence[RemoteFile]:
            raise OSError("Temporary failure in name resolution")

    with pytest.raises(WeightsError, match="--offline"):
        fetch_weights("openai/shap-e", tmp_path, downloader=Offline([]), disk_usage=roomy)


def test_weights_which_models_download(tmp_path: Path) -> None:
    assert needs_download("openai/shap-e")
    assert not needs_download("tiny") and not needs_download("instant:delay=1")
    assert not needs_download(str(tmp_path))


def test_weights_bar_and_units() -> None:
    bar = DownloadBar(100 * MB, io.StringIO(), clock=Clock(), enabled=False)
    bar.add(50 * MB)
    assert bar.render().startswith("weights 50.0 MB/100.0 MB [##########..........]")
    assert human_bytes(512) == "512 B" and human_bytes(3 * 2**30) == "3.0 GB"


def test_weights_hub_progress_adapter_reports_resumed_and_new_bytes() -> None:
    from agent.weights import _progress_tqdm

    seen: list[int] = []
    reporter = _progress_tqdm(seen.append)(total=100, initial=30, unit="B", desc="x")
    reporter.update(10)
    reporter.update(5)
    reporter.close()
    assert seen == [30, 10, 5]
