"""Where result uploads land: a temp file on disk per upload, never memory.

The protocol layer hands an upload's bytes to a sink as they arrive; this is
the coordinator's sink. It exists only for an upload of an assignment the
agent holds (``CoordinatorSession`` opens none for anything else) and is
removed when the upload was checked and stored, failed or its connection
dropped. The files sit in ``<blob store's scratch>/incoming/`` and are named like the
blob store's own partial writes (``.incoming-*.part``), so a crash leaves
nothing that ``BlobStore.sweep_partials`` does not remove at the next start.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from coordinator.store.storage import BlobStore
from protocol import Result

INCOMING = "incoming"


class UploadFile:
    """A :class:`protocol.Sink` that appends to a temp file; ``remove`` deletes it."""

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

    def abort(self) -> None:
        self.remove()

    def remove(self) -> None:
        if self._removed:
            return
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
        self._removed = True

    def read_parts(self) -> dict[str, bytes]:
        """The artifacts by kind (call from a thread: it reads the whole file)."""
        with self.path.open("rb") as fh:
            return {a.kind: fh.read(a.size) for a in self.artifacts}


def open_upload(store: BlobStore, result: Result) -> UploadFile:
    return UploadFile(store, result)
