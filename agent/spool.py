"""A local directory of finished results the coordinator has not acknowledged yet.

A finished result is held here (:meth:`Spool.hold`) and written to disk while it is
uploaded, so a dropped connection or a crash loses no GPU work: a held result is
listed and uploadable at once, and on disk a few milliseconds later (a crash in that
window loses it like a crash during its generation would; the coordinator's lease
gives the job another try). Layout, one directory per (job, attempt)::

    <root>/<job>.<attempt>/manifest.json   job, attempt, per-artifact size and sha256, mesh stats
    <root>/<job>.<attempt>/<kind>          artifact bytes (glb, preview)
    <root>/tmp/                            entries being written
    <root>/quarantine/                     entries that failed verification; never sent

An entry is built in ``tmp/`` (every file fsynced) and moved into place with
one ``os.replace`` of its directory, so a reader sees a whole entry or none.

The entries this process put are also kept in memory (up to :data:`MEMORY_BYTES`)
until deleted: loading one for its upload then reads and hashes nothing (the bytes
are those just written, with their digests). Entries from before a restart, or
evicted, are read back from disk and verified. A held entry stays in memory until
its write succeeds (if the disk refuses it, until it is deleted: it is then uploaded
from memory only, and lost if the process ends first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

logger = logging.getLogger(__name__)

_JOB = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KINDS = frozenset({"glb", "preview"})
_MANIFEST = "manifest.json"
_RESERVED = frozenset({"tmp", "quarantine"})

JobKey = tuple[str, int]
# Results kept in memory after put, for their upload (the oldest go first beyond this).
MEMORY_BYTES = 64 * 2**20


class SpoolError(Exception):
    """The spool cannot store or return an entry."""


class SpoolCorruptError(SpoolError):
    """An entry failed verification and has been quarantined."""


@dataclass(frozen=True, slots=True)
class SpooledResult:
    job: str
    attempt: int
    artifacts: tuple[tuple[str, bytes], ...]  # (kind, bytes) in upload order, glb first
    vertices: int = 0
    faces: int = 0
    seconds: float = 0.0
    # sha256 hex of each artifact, in order, when known (put and load fill it in).
    digests: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> JobKey:
        return (self.job, self.attempt)


def _entry_name(job: str, attempt: int) -> str:
    # Job ids come from the network: check them before they become a path.
    if not _JOB.match(job) or not 1 <= attempt <= 1_000_000:
        raise SpoolError(f"refusing to spool job {job!r} attempt {attempt!r}")
    return f"{job}.{attempt}"


def _parse_name(name: str) -> JobKey | None:
    job, dot, attempt = name.rpartition(".")
    if not dot or not _JOB.match(job) or not attempt.isdigit():
        return None
    return job, int(attempt)


def _check_kinds(result: SpooledResult) -> None:
    kinds = [kind for kind, _ in result.artifacts]
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= _KINDS:
        raise SpoolError(f"bad artifact kinds {kinds} for job {result.job}")


def _with_digests(result: SpooledResult) -> SpooledResult:
    """``result`` with the sha256 of each artifact (kept if it has them already)."""
    if len(result.digests) == len(result.artifacts):
        return result
    digests = tuple(hashlib.sha256(data).hexdigest() for _, data in result.artifacts)
    return replace(result, digests=digests)


def _size(result: SpooledResult) -> int:
    return sum(len(data) for _, data in result.artifacts)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Spool:
    """Finished-but-unacknowledged results. Safe for one process; not for several."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._quarantine = self.root / "quarantine"
        for path in (self.root, self._tmp, self._quarantine):
            path.mkdir(parents=True, exist_ok=True)
        # Anything left in tmp/ is a write a crash interrupted: never complete, never sent.
        for leftover in self._tmp.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        # Callers run put/load/delete in worker threads: the memory has a lock.
        self._lock = threading.Lock()
        self._memory: OrderedDict[JobKey, SpooledResult] = OrderedDict()
        self._memory_bytes = 0
        # Held but not (yet) on disk: never evicted, listed by pending().
        self._unwritten: dict[JobKey, SpooledResult] = {}

    def hold(self, result: SpooledResult) -> SpooledResult:
        """Keep ``result`` in memory, listed and loadable at once (with its digests, which
        :meth:`put` reuses); :meth:`put` it next to make it durable."""
        _entry_name(result.job, result.attempt)  # a job id fit for a path, or SpoolError
        _check_kinds(result)
        result = _with_digests(result)
        with self._lock:
            self._unwritten[result.key] = result
        return result

    def forget_held(self, key: JobKey) -> bool:
        """Drop a held result that was never written (it was acknowledged first); False
        if it is not held unwritten (then :meth:`delete` it)."""
        with self._lock:
            return self._unwritten.pop(key, None) is not None

    def recall(self, key: JobKey) -> SpooledResult | None:
        """The entry from memory (held or recently put), or None: then :meth:`load` it."""
        with self._lock:
            return self._unwritten.get(key) or self._memory.get(key)

    def put(self, result: SpooledResult) -> None:
        """Store ``result`` durably, replacing an earlier copy of the same (job, attempt)."""
        name = _entry_name(result.job, result.attempt)
        _check_kinds(result)
        result = _with_digests(result)
        staging = self._tmp / uuid.uuid4().hex
        staging.mkdir()
        try:
            for kind, data in result.artifacts:
                _write_synced(staging / kind, data)
            manifest = {
                "job": result.job,
                "attempt": result.attempt,
                "artifacts": [
                    {"kind": kind, "size": len(data), "sha256": digest}
                    for (kind, data), digest in zip(result.artifacts, result.digests, strict=True)
                ],
                "vertices": result.vertices,
                "faces": result.faces,
                "seconds": result.seconds,
            }
            _write_synced(staging / _MANIFEST, json.dumps(manifest).encode())
            _fsync_dir(staging)
            target = self.root / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._remember(result)

    def _remember(self, result: SpooledResult) -> None:
        size = _size(result)
        with self._lock:
            self._drop(result.key)
            self._unwritten.pop(result.key, None)
            if size > MEMORY_BYTES:
                return
            self._memory[result.key] = result
            self._memory_bytes += size
            while self._memory_bytes > MEMORY_BYTES:
                _, oldest = self._memory.popitem(last=False)
                self._memory_bytes -= _size(oldest)

    def _forget(self, key: JobKey) -> None:
        with self._lock:
            self._drop(key)
            self._unwritten.pop(key, None)

    def _drop(self, key: JobKey) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= _size(old)

    def pending(self) -> list[JobKey]:
        """(job, attempt) of every entry, oldest first (held ones not yet on disk last);
        unrecognisable names are quarantined."""
        with self._lock:
            unwritten = list(self._unwritten)
        found: list[tuple[float, JobKey]] = []
        for path in self.root.iterdir():
            if path.name in _RESERVED:
                continue
            key = _parse_name(path.name)
            if key is None or not path.is_dir():
                self._quarantine_path(path, "unrecognised spool entry")
                continue
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime, key))
        on_disk = [key for _, key in sorted(found)]
        return on_disk + [key for key in unwritten if key not in on_disk]

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        with self._lock:
            if key in self._unwritten:
                return True
        try:
            return (self.root / _entry_name(*key)).is_dir()
        except (SpoolError, TypeError):
            return False

    def load(self, job: str, attempt: int) -> SpooledResult:
        """Read and verify an entry; a corrupt one is quarantined and raises SpoolCorruptError."""
        path = self.root / _entry_name(job, attempt)
        with self._lock:
            held = self._unwritten.get((job, attempt))
            kept = held or self._memory.get((job, attempt))
        if held is not None:  # not on disk yet
            return held
        if not path.is_dir():
            self._forget((job, attempt))
            raise SpoolError(f"no spooled result for job {job} attempt {attempt}")
        if kept is not None:
            return kept
        try:
            return self._verify(path, job, attempt)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._quarantine_path(path, str(exc))
            raise SpoolCorruptError(f"spooled result {path.name} is corrupt: {exc}") from exc

    def _verify(self, path: Path, job: str, attempt: int) -> SpooledResult:
        manifest = json.loads((path / _MANIFEST).read_bytes())
        if manifest["job"] != job or manifest["attempt"] != attempt:
            raise ValueError("manifest names another job")
        artifacts: list[tuple[str, bytes]] = []
        digests: list[str] = []
        for entry in manifest["artifacts"]:
            kind = entry["kind"]
            if kind not in _KINDS:
                raise ValueError(f"unknown artifact kind {kind!r}")
            data = (path / kind).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != entry["size"] or digest != entry["sha256"]:
                raise ValueError(f"{kind} does not match its size or sha256")
            artifacts.append((kind, data))
            digests.append(digest)
        if not artifacts:
            raise ValueError("no artifacts")
        return SpooledResult(
            job=job,
            attempt=attempt,
            artifacts=tuple(artifacts),
            vertices=int(manifest["vertices"]),
            faces=int(manifest["faces"]),
            seconds=float(manifest["seconds"]),
            digests=tuple(digests),
        )

    def delete(self, job: str, attempt: int) -> bool:
        """Forget an entry; returns whether there was one."""
        path = self.root / _entry_name(job, attempt)
        self._forget((job, attempt))
        if not path.exists():
            return False
        # Rename first so a crash mid-delete leaves a tmp leftover, not a half entry.
        doomed = self._tmp / f"del-{uuid.uuid4().hex}"
        os.replace(path, doomed)
        try:  # an entry is a few flat files: cheaper than rmtree's walk
            for name in os.listdir(doomed):
                os.unlink(doomed / name)
            os.rmdir(doomed)
        except OSError:
            shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _quarantine_path(self, path: Path, why: str) -> None:
        key = _parse_name(path.name)
        if key is not None:
            self._forget(key)
        target = self._quarantine / f"{path.name}-{uuid.uuid4().hex[:8]}"
        logger.warning("quarantining spool entry %s: %s", path.name, why)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)
