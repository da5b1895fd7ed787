"""Stored models for download: conversions made once, cached on disk, limited.

A conversion costs CPU and memory in proportion to the model, and anyone who
may see a model (anonymous visitors, for a public one) can ask for it. So each
(job, format) is converted at most once: the file is cached next to the GLB
(``BlobStore``) and deleted with it; concurrent requests for the same file wait
for the one conversion; at most ``limit`` conversions run at a time, each in a
worker thread so the event loop keeps serving. Files are streamed in chunks from
the store (an open file, or an object being downloaded), never read whole into
memory; a store that signs URLs may have downloads redirected to one instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from starlette.responses import RedirectResponse, Response, StreamingResponse

from coordinator.meshes.convert import FORMATS, WRITERS, ExportFormat, write_mesh
from coordinator.meshes.glb import read_mesh
from coordinator.meshes.glbcheck import GlbLimits
from coordinator.meshes.options import printable_stl
from coordinator.settings import Settings
from coordinator.store.storage import DERIVED, BlobReader, BlobStore, LocalBlobStore


def glb_limits(settings: Settings) -> GlbLimits:
    """The limits an uploaded model is checked against, from the settings."""
    return GlbLimits(
        max_bytes=settings.max_result_bytes,
        max_vertices=settings.glb_max_vertices,
        max_faces=settings.glb_max_faces,
        max_nodes=settings.glb_max_nodes,
        max_accessors=settings.glb_max_accessors,
        max_expansion=settings.glb_max_expansion,
    )


class ModelUnavailableError(LookupError):
    """The model file is gone (the job was deleted) or cannot be converted."""


@dataclass
class ModelFile:
    """A model file to send: open for streaming (``chunks`` closes it), or a signed
    URL to redirect to.

    ``first`` is the first chunk, read in the same thread hop that opened the file: a
    model of one chunk (256 KiB) costs one hop in all (the file is closed in it too and
    sent as a plain response), and reading stops at ``size`` rather than at an empty
    read (each read is a hop to a worker thread and back).
    """

    reader: BlobReader | None
    size: int
    content_type: str
    filename: str
    url: str | None = None
    first: bytes = b""

    async def chunks(self) -> AsyncIterator[bytes]:
        reader = self.reader
        if reader is None:  # all of it was read (and the file closed) with ``first``
            if self.first:
                yield self.first
            return
        try:
            sent = len(self.first)
            if self.first:
                yield self.first
            while sent < self.size:
                chunk = await asyncio.to_thread(reader.read_chunk)
                if not chunk:
                    break
                sent += len(chunk)
                yield chunk
        finally:
            reader.close()

    def response(self, headers: dict[str, str]) -> Response:
        if self.url is not None:
            # The signed URL expires soon: neither it nor this answer may be cached.
            return RedirectResponse(self.url, 307, headers={"Cache-Control": "no-store"})
        if self.reader is None:  # all of it is in ``first``: no stream (and no task) needed
            return Response(self.first, media_type=self.content_type, headers=headers)
        return StreamingResponse(
            self.chunks(),
            media_type=self.content_type,
            headers={**headers, "Content-Length": str(self.size)},
        )


class ModelFiles:
    """The one owner of conversions in progress (and of the limit on them)."""

    def __init__(self, store: BlobStore, limits: GlbLimits, concurrency: int) -> None:
        self._store = store
        self._limits = limits
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.conversions = 0  # conversions run (a cached file is not counted again)

    async def open(
        self,
        job_id: str,
        fmt: str,
        signed: bool = False,
        printable: bool = False,
        kept: bytes | None = None,
    ) -> ModelFile:
        """The job's model as ``fmt`` (converted first if need be), open for reading;
        with ``signed``, a signed URL instead where the store makes them.

        ``printable``: the job asked for 3D printing, so its STL is the repaired one
        (made when the result was stored; remade here only if that file is gone).
        ``kept``: the file's bytes as just stored, sent from memory (no thread hop)
        where the store serves its files itself (no signed URLs)."""
        if fmt not in FORMATS:
            raise LookupError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        content_type = FORMATS[fmt].content_type
        filename = f"shapefarm-{job_id}{FORMATS[fmt].extension}"
        if kept is not None and isinstance(self._store, LocalBlobStore):
            return ModelFile(None, len(kept), content_type, filename, first=kept)
        if fmt in DERIVED:
            await self._ensure(job_id, fmt, printable and fmt == "stl")
        try:
            # Once open, the file can be sent even if the job is deleted meanwhile.
            reader, size, first, url = await asyncio.to_thread(self._open, job_id, fmt, signed)
        except FileNotFoundError:
            raise ModelUnavailableError("the model file is gone") from None
        if url is not None:
            return ModelFile(None, 0, content_type, filename, url)
        return ModelFile(reader, size, content_type, filename, first=first)

    def _open(
        self, job_id: str, fmt: str, signed: bool
    ) -> tuple[BlobReader | None, int, bytes, str | None]:
        """A signed URL (``signed``, where the store makes them), else the file open for
        reading and its first chunk; closed already (reader None) if that was all of it.
        One thread hop for all of it."""
        if signed and self._store.exists(job_id, fmt):
            url = self._store.signed_url(job_id, fmt)
            if url is not None:
                return None, 0, b"", url
        reader = self._store.open_read(job_id, fmt)
        try:
            first = reader.read_chunk() if reader.size > 0 else b""
            if len(first) >= reader.size:
                reader.close()
                return None, reader.size, first[: reader.size], None
            return reader, reader.size, first, None
        except BaseException:
            reader.close()
            raise

    async def _ensure(self, job_id: str, fmt: str, printable: bool) -> None:
        key = (job_id, fmt)
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._convert(job_id, fmt, printable))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # A waiter that goes away must not cancel the conversion others wait for.
        await asyncio.shield(task)

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if not task.cancelled():
            task.exception()  # seen here, so an unawaited failure is not logged as lost

    async def _convert(self, job_id: str, fmt: str, printable: bool) -> None:
        if await asyncio.to_thread(self._store.exists, job_id, fmt):
            return
        async with self._slots:
            self.conversions += 1
            await asyncio.to_thread(self._convert_now, job_id, fmt, printable)

    def _convert_now(self, job_id: str, fmt: str, printable: bool) -> None:
        if self._store.exists(job_id, fmt):
            return
        try:
            data = self._store.read(job_id, "glb")
        except FileNotFoundError:
            raise ModelUnavailableError("the model file is gone") from None
        try:
            if printable:
                self._store.write_with(
                    job_id, fmt, lambda out: printable_stl(data, self._limits, out)
                )
                return
            mesh = read_mesh(data, self._limits)
        except ValueError as exc:  # stored before models were normalised, or limits shrank
            raise ModelUnavailableError(f"the model cannot be converted: {exc}") from None
        self._store.write_with(job_id, fmt, lambda out: write_mesh(mesh, _format(fmt), out))


def _format(fmt: str) -> ExportFormat:
    """``fmt`` as a conversion's name: one the writers have (KeyError for any other)."""
    if fmt not in WRITERS:
        raise KeyError(fmt)
    return cast(ExportFormat, fmt)
