"""Model files, named by job id (never by user input), written whole or not at all.

``BlobStore`` is what the coordinator needs from a place to keep them; its
methods block (call them from a worker thread). Two implementations:

- ``LocalBlobStore`` (the default): ``<data dir>/models/<id[:2]>/<id>.<kind>``,
  written atomically (temp file, fsync, rename).
- ``S3BlobStore`` (``coordinator/store/s3store.py``): an S3-compatible bucket,
  shared by every coordinator replica (``SHAPEFARM_BLOB_STORE=s3``).

Either keeps its temp files (result uploads, conversions being written) in a
local ``scratch`` directory that ``sweep_partials`` empties at start-up.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from coordinator.settings import Settings

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Conversions of the GLB for download (and the viewer's compressed copy, "meshopt"),
# cached next to it and deleted with it.
DERIVED = ("obj", "stl", "ply", "meshopt")
# An image job's input image (coordinator/services/job_images.py) is "input.png".
KINDS = frozenset({"glb", "png", "input.png", *DERIVED})
READ_BYTES = 256 * 1024


def blob_name(job_id: str, kind: str) -> str:
    """``<id[:2]>/<id>.<kind>``; refuses anything but a job id and a known kind."""
    if not _ID.match(job_id) or kind not in KINDS:
        raise ValueError(f"bad blob name {job_id!r}.{kind!r}")
    return f"{job_id[:2]}/{job_id}.{kind}"


class BlobStoreError(RuntimeError):
    """The store cannot be used (bad credentials, missing bucket, unreachable)."""


class BlobReader(Protocol):
    """An open stored file: ``size`` bytes, read in chunks (blocking), then closed."""

    size: int

    def read_chunk(self) -> bytes:
        """The next chunk, b"" at the end."""
        ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    scratch: Path  # a local directory for temp files

    def check(self) -> None:
        """Raise ``BlobStoreError`` with a clear reason if the store cannot be written."""
        ...

    def write(self, job_id: str, kind: str, data: bytes) -> None: ...

    def write_with(self, job_id: str, kind: str, produce: Callable[[BinaryIO], object]) -> None:
        """Let ``produce`` stream the file's contents; it appears whole or not at all."""
        ...

    def read(self, job_id: str, kind: str) -> bytes:
        """The whole file; ``FileNotFoundError`` if there is none."""
        ...

    def open_read(self, job_id: str, kind: str) -> BlobReader:
        """The file open for streaming; ``FileNotFoundError`` if there is none."""
        ...

    def signed_url(self, job_id: str, kind: str) -> str | None:
        """A short-lived URL that serves the file directly, or None (stream it instead)."""
        ...

    def exists(self, job_id: str, kind: str) -> bool: ...

    def delete(self, job_id: str) -> None:
        """Delete the job's model, preview and conversions (those that exist)."""
        ...

    def sweep_partials(self) -> int:
        """Remove temp files left by a crash mid-write; returns how many."""
        ...


class FileReader:
    """A ``BlobReader`` over an open local file."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.size = os.fstat(file.fileno()).st_size

    def read_chunk(self) -> bytes:
        return self.file.read(READ_BYTES)

    def close(self) -> None:
        self.file.close()


def spool_with(folder: Path, produce: Callable[[BinaryIO], object]) -> Path:
    """A temp file in ``folder`` that ``produce`` wrote and fsynced (removed if it fails)."""
    fd, tmp = _open_temp(folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            produce(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# Temp names of this process: the pid keeps processes sharing a folder apart, the count
# keeps this one's writers apart, and O_EXCL settles whatever is left.
_TEMP_NAMES = itertools.count()


def _open_temp(folder: Path) -> tuple[int, Path]:
    """A new temp file in ``folder`` (made if missing), open for writing, mode 0600.

    ``mkstemp`` costs a random name and, with the ``mkdir`` it needs first, a second
    system call; a model's write is on every result's path, so this takes one ``open``
    where it can."""
    while True:
        tmp = folder / f".incoming-{os.getpid()}-{next(_TEMP_NAMES)}.part"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            continue


def sweep(folder: Path, pattern: str) -> int:
    count = 0
    for tmp in folder.glob(pattern):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


class LocalBlobStore:
    """``<root>/<id[:2]>/<id>.<kind>``; a reader never sees a half-written file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.scratch = root

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise BlobStoreError(f"the model directory {self.root} is not writable")

    def path(self, job_id: str, kind: str) -> Path:
        return self.root / blob_name(job_id, kind)

    def write(self, job_id: str, kind: str, data: bytes) -> None:
        self.write_with(job_id, kind, lambda fh: fh.write(data))

    def write_with(self, job_id: str, kind: str, produce: Callable[[BinaryIO], object]) -> None:
        final = self.path(job_id, kind)
        # Conversions of an older model are stale. None exist without one: a conversion
        # is made from the GLB and removes itself if the GLB is gone when it is written.
        if kind == "glb" and final.exists():
            self._drop_derived(job_id)
        tmp = spool_with(final.parent, produce)
        try:
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if kind in DERIVED and not self.exists(job_id, "glb"):
            final.unlink(missing_ok=True)  # the job was deleted while this was converted

    def _drop_derived(self, job_id: str) -> None:
        for kind in DERIVED:
            self.path(job_id, kind).unlink(missing_ok=True)

    def read(self, job_id: str, kind: str) -> bytes:
        return self.path(job_id, kind).read_bytes()

    def open_read(self, job_id: str, kind: str) -> BlobReader:
        # Once open, the file can be sent even if the job is deleted meanwhile.
        return FileReader(self.path(job_id, kind).open("rb"))

    def signed_url(self, job_id: str, kind: str) -> str | None:
        return None

    def exists(self, job_id: str, kind: str) -> bool:
        return self.path(job_id, kind).is_file()

    def delete(self, job_id: str) -> None:
        for kind in ("glb", "png", "input.png"):
            self.path(job_id, kind).unlink(missing_ok=True)
        self._drop_derived(job_id)

    def sweep_partials(self) -> int:
        return sweep(self.root, "*/.incoming-*.part")

    def ids(self) -> set[str]:
        return {p.stem for p in self.root.glob("*/*.glb")}


def make_blob_store(settings: Settings) -> BlobStore:
    """The store the settings choose (``blob_store``: local or s3), not yet checked."""
    if settings.blob_store == "s3":
        from coordinator.store.s3store import S3BlobStore

        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(settings.data_dir / "models")
