"""Model files on disk, named by job id (never by user input), written atomically."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Conversions of the GLB for download, cached next to it and deleted with it.
DERIVED = ("obj", "stl", "ply")
# An image job's input image (coordinator/services/job_images.py) is "input.png".
KINDS = frozenset({"glb", "png", "input.png", *DERIVED})


class BlobStore:
    """``<root>/<id[:2]>/<id>.<kind>``; a reader never sees a half-written file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str, kind: str) -> Path:
        if not _ID.match(job_id) or kind not in KINDS:
            raise ValueError(f"bad blob name {job_id!r}.{kind!r}")
        return self.root / job_id[:2] / f"{job_id}.{kind}"

    def write(self, job_id: str, kind: str, data: bytes) -> Path:
        return self.write_with(job_id, kind, lambda fh: fh.write(data))

    def write_with(self, job_id: str, kind: str, produce: Callable[[BinaryIO], object]) -> Path:
        """Let ``produce`` stream the file's contents; it appears whole or not at all."""
        final = self.path(job_id, kind)
        final.parent.mkdir(parents=True, exist_ok=True)
        if kind == "glb":
            self._drop_derived(job_id)  # conversions of an older model are stale
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".incoming-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                produce(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if kind in DERIVED and not self.exists(job_id, "glb"):
            final.unlink(missing_ok=True)  # the job was deleted while this was converted
        return final

    def _drop_derived(self, job_id: str) -> None:
        for kind in DERIVED:
            self.path(job_id, kind).unlink(missing_ok=True)

    def read(self, job_id: str, kind: str) -> bytes:
        return self.path(job_id, kind).read_bytes()

    def exists(self, job_id: str, kind: str) -> bool:
        return self.path(job_id, kind).is_file()

    def delete(self, job_id: str) -> None:
        for kind in ("glb", "png", "input.png"):
            self.path(job_id, kind).unlink(missing_ok=True)
        self._drop_derived(job_id)

    def sweep_partials(self) -> int:
        """Remove temp files left by a crash mid-write; returns how many."""
        count = 0
        for tmp in self.root.glob("*/.incoming-*.part"):
            tmp.unlink(missing_ok=True)
            count += 1
        return count

    def ids(self) -> set[str]:
        return {p.stem for p in self.root.glob("*/*.glb")}
