"""Where result uploads land: a small one in memory within a fixed budget, any other in a
temp file on disk.

The protocol layer hands an upload's bytes to a sink as they arrive; this is
the coordinator's sink. It exists only for an upload of an assignment the
agent holds (``CoordinatorSession`` opens none for anything else) and is
removed when the upload was checked and stored, failed or its connection
dropped.

An upload whose header declares at most :data:`MEMORY_UPLOAD_MAX` bytes in all (a typical
model) is kept in memory while :class:`UploadMemory` (one per farm) has room:
:data:`MEMORY_BUDGET` bytes for every connection together, reserved at the header and given
back when the sink is removed. That saves the temp file's create, write, read back and
unlink (on the event loop and in the intake's thread) for each such result. Past the
budget, and for anything larger, the bytes go to a temp file in
``<blob store's scratch>/incoming/``, named like the blob store's own partial writes
(``.incoming-*.part``), so a crash leaves nothing that ``BlobStore.sweep_partials`` does not
remove at the next start. Neither sink takes more than the header declared (the protocol
layer refuses the upload first).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from coordinator.store.storage import BlobStore
from protocol import Artifact, Result, split

INCOMING = "incoming"
MEMORY_UPLOAD_MAX = 4 * 2**20  # a larger upload always goes to disk
MEMORY_BUDGET = 32 * 2**20  # all uploads held in memory at once, every connection together


class UploadMemory:
    """The bytes every in-memory upload of a farm may hold together (reserved on the event
    loop, released by whichever thread removes the upload)."""

    def __init__(self, budget: int = MEMORY_BUDGET, per_upload: int = MEMORY_UPLOAD_MAX) -> None:
        self.budget = budget
        self.per_upload = per_upload
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if size > self.per_upload or self.used + size > self.budget:
                return False
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size


class StoredUpload:
    """A :class:`protocol.Sink` the intake can read back (``read_parts``) and remove
    (idempotent; ``abort`` removes too)."""

    artifacts: Sequence[Artifact]

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        self.remove()

    def read_parts(self) -> dict[str, bytes]:
        """The artifacts by kind (call from a thread: a file sink reads the whole file)."""
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class MemoryUpload(StoredUpload):
    """A small upload's bytes, within its farm's :class:`UploadMemory`."""

    def __init__(self, memory: UploadMemory, result: Result, size: int) -> None:
        self.artifacts = result.artifacts
        self._memory = memory
        self._size = size  # reserved
        self._chunks: list[bytes] = []  # kept as they came: joined once, when read
        self._filled = 0
        self._removed = False
        self._lock = threading.Lock()  # removed by the intake's thread or the event loop

    def write(self, data: bytes) -> None:
        if self._removed:
            raise ValueError("write to a removed upload")
        if self._filled + len(data) > self._size:  # the protocol layer refuses it first
            raise ValueError("an upload wrote more than its header declared")
        self._chunks.append(bytes(data))
        self._filled += len(data)

    def close(self) -> None:
        pass

    def remove(self) -> None:
        with self._lock:
            if self._removed:
                return
            self._removed = True
        self._chunks = []
        self._memory.release(self._size)

    def read_parts(self) -> dict[str, bytes]:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        if len(self.artifacts) == 1:  # the usual: the GLB alone, no copy
            return {self.artifacts[0].kind: data}
        return {
            a.kind: part
            for a, part in zip(self.artifacts, split(data, self.artifacts), strict=True)
        }


class UploadFile(StoredUpload):
    """An upload's bytes appended to a temp file; ``remove`` deletes it."""

    def __init__(self, store: BlobStore, result: Result) -> None:
        folder = store.scratch / INCOMING
        prefix = f".incoming-{result.job}-{result.attempt}-"
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".part")
        except FileNotFoundError:  # the first upload (a syscall saved on every later one)
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".part")
        self.path = Path(name)
        self.artifacts = result.artifacts
        self._file = os.fdopen(fd, "wb")
        self._removed = False

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        if self._removed:
            return
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
        self._removed = True

    def read_parts(self) -> dict[str, bytes]:
        with self.path.open("rb") as fh:
            return {a.kind: fh.read(a.size) for a in self.artifacts}


def open_upload(store: BlobStore, memory: UploadMemory, result: Result) -> StoredUpload:
    """The sink for a held upload: in memory if it is small and ``memory`` has room."""
    size = sum(a.size for a in result.artifacts)
    if memory.reserve(size):
        return MemoryUpload(memory, result, size)
    return UploadFile(store, result)
