"""Fetch a hub model's weights before loading it: free-space check, progress bar, resume.

Through ``huggingface_hub``: a dry run lists the repository's files, their
sizes and which are cached; the missing ones are checked against the free
space of the cache's disk, then downloaded one by one with one progress bar
over all of them (size, speed, ETA). An interrupted download keeps its
``.incomplete`` file in the cache and the next start resumes it (the hub
library does the ranged request; the bar starts from what is already there).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from agent.models import is_random

MARGIN_BYTES = 256 * 2**20  # the cache's own bookkeeping, and not filling a disk to the brim


class WeightsError(Exception):
    """The weights cannot be fetched; the message says what to do."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    name: str
    size: int
    cached: bool


class Downloader(Protocol):
    def plan(self, repo_id: str, cache_dir: Path | None) -> Sequence[RemoteFile]: ...

    def fetch(
        self, repo_id: str, name: str, cache_dir: Path | None, progress: Callable[[int], None]
    ) -> None: ...


def _progress_tqdm(progress: Callable[[int], None]) -> Any:
    """A silent tqdm class that reports bytes (resumed ones included) to ``progress``."""
    from tqdm.auto import tqdm

    class Reporter(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            progress(int(kwargs.get("initial") or 0))

        def update(self, n: float | None = 1) -> bool | None:
            progress(int(n or 0))
            return None

    return Reporter


class HubDownloader:
    """The real downloader, through ``huggingface_hub``."""

    def plan(self, repo_id: str, cache_dir: Path | None) -> Sequence[RemoteFile]:
        from huggingface_hub import snapshot_download

        infos = snapshot_download(repo_id, cache_dir=cache_dir, dry_run=True)
        assert isinstance(infos, list)
        return [RemoteFile(i.filename, int(i.file_size or 0), bool(i.is_cached)) for i in infos]

    def fetch(
        self, repo_id: str, name: str, cache_dir: Path | None, progress: Callable[[int], None]
    ) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id, name, cache_dir=cache_dir, tqdm_class=_progress_tqdm(progress))


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class DownloadBar:
    """``weights 1.2 GB/2.6 GB [#####.....] 12.3 MB/s ETA 1m54s``, redrawn in place."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 20,
        enabled: bool | None = None,
    ) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.clock = clock
        self.width = width
        self.started = clock()
        self.fetched = 0  # bytes this run (speed excludes resumed bytes)
        self._resumed = 0

    def add(self, count: int, *, resumed: bool = False) -> None:
        self.done = min(self.total, self.done + count)
        if resumed:
            self._resumed += count
        else:
            self.fetched += count
        if self.enabled:  # a log file gets the summary line only
            self.stream.write("\r" + self.render() + "\x1b[K")
            self.stream.flush()

    def render(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        speed = self.fetched / elapsed
        filled = round(self.width * self.done / self.total)
        eta = human_duration((self.total - self.done) / speed) if speed > 0 else "?"
        return (
            f"weights {human_bytes(self.done)}/{human_bytes(self.total)} "
            f"[{'#' * filled}{'.' * (self.width - filled)}] {human_bytes(speed)}/s ETA {eta}"
        )

    def close(self) -> None:
        self.stream.write(("\r" if self.enabled else "") + self.render() + "\n")
        self.stream.flush()


def hub_cache(cache_dir: Path | None) -> Path:
    """Where the weights go: ``--cache-dir``, else the Hugging Face cache (HF_HOME aware)."""
    if cache_dir is not None:
        return cache_dir
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        return Path.home() / ".cache" / "huggingface" / "hub"


def free_bytes(where: Path, disk_usage: Callable[[str], Any] = shutil.disk_usage) -> int:
    """Free space of the disk ``where`` is (or will be) on."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(disk_usage(str(probe)).free)


def needs_download(model: str) -> bool:
    """Hub ids do; the random models, ``instant…`` and local directories do not."""
    if is_random(model) or Path(model).expanduser().exists():
        return False
    return "/" in model and not model.startswith((".", "/", "~"))


def fetch_weights(
    repo_id: str,
    cache_dir: Path | None,
    *,
    downloader: Downloader | None = None,
    disk_usage: Callable[[str], Any] = shutil.disk_usage,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    bar_enabled: bool | None = None,
) -> int:
    """Download what is missing of ``repo_id``; returns the bytes that were missing."""
    downloader = downloader or HubDownloader()
    try:
        files = downloader.plan(repo_id, cache_dir)
    except Exception as exc:
        raise WeightsError(
            f"cannot list the files of {repo_id!r}: {exc}. Check the network, or pass "
            "--offline with weights already in the cache"
        ) from exc
    missing = [f for f in files if not f.cached]
    needed = sum(f.size for f in missing)
    if not missing:
        return 0
    where = hub_cache(cache_dir)
    free = free_bytes(where, disk_usage)
    if free < needed + MARGIN_BYTES:
        raise WeightsError(
            f"the weights of {repo_id} need {human_bytes(needed)} more, but only "
            f"{human_bytes(free)} is free at {where}: free some space or pass --cache-dir "
            "on a disk with room"
        )
    bar = DownloadBar(needed, stream, clock, enabled=bar_enabled)
    try:
        for remote in missing:
            first = True

            def progress(count: int) -> None:
                nonlocal first
                bar.add(count, resumed=first)  # the first report is what was already there
                first = False

            downloader.fetch(repo_id, remote.name, cache_dir, progress)
    except Exception as exc:
        raise WeightsError(
            f"downloading {repo_id} stopped: {exc}. Run the agent again: the download resumes "
            "where it stopped"
        ) from exc
    finally:
        bar.close()
    return needed
