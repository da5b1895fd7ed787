"""Model files in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2, ...), through
``obstore`` (the Rust ``object_store`` crate).

Objects are ``<prefix>/<id[:2]>/<id>.<kind>``. A put is whole or nothing (S3 has
no partial objects; large files go up in parts), so no reader sees half a model.
Downloads stream from the bucket in chunks of ``READ_BYTES`` (bounded memory),
or, with ``s3_presign_s`` set, are redirected to a URL signed for that long.
Temp files (uploads arriving from agents, conversions being written) stay in a
local scratch directory under the data dir.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from coordinator.settings import Settings
from coordinator.store.storage import (
    DERIVED,
    KINDS,
    READ_BYTES,
    BlobReader,
    BlobStoreError,
    blob_name,
    spool_with,
    sweep,
)

SCRATCH = "scratch"
# obstore raises the built-in FileNotFoundError for a missing object; older versions
# raised its own NotFoundError.
MISSING = (FileNotFoundError, NotFoundError)


class StreamReader:
    """A ``BlobReader`` over an object being downloaded."""

    def __init__(self, size: int, chunks: Iterator[Any]) -> None:
        self.size = size
        self._chunks = chunks

    def read_chunk(self) -> bytes:
        try:
            return bytes(next(self._chunks))
        except StopIteration:
            return b""
        except MISSING:
            raise FileNotFoundError("the model file is gone") from None

    def close(self) -> None:
        self._chunks = iter(())


class S3BlobStore:
    def __init__(
        self, store: S3Store, scratch: Path, describe: str, presign_s: float = 0.0
    ) -> None:
        self.store = store
        self.scratch = scratch
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.describe = describe  # bucket and endpoint, for error messages
        self.presign_s = presign_s

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        config: dict[str, Any] = {}
        if settings.s3_endpoint:
            config["endpoint"] = settings.s3_endpoint
        if settings.s3_region:
            config["region"] = settings.s3_region
        if settings.s3_access_key_id:
            config["access_key_id"] = settings.s3_access_key_id
            config["secret_access_key"] = str(settings.s3_secret_access_key)
        client: dict[str, Any] = {"timeout": timedelta(seconds=60)}
        client["connect_timeout"] = timedelta(seconds=10)
        if settings.s3_endpoint.startswith("http://"):
            client["allow_http"] = True
        store = S3Store(
            settings.s3_bucket,
            prefix=settings.s3_prefix.strip("/") or None,
            config=config,  # type: ignore[arg-type]
            client_options=client,  # type: ignore[arg-type]
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=20)},
        )
        where = settings.s3_endpoint or "AWS"
        return cls(
            store,
            settings.data_dir / SCRATCH,
            f"bucket {settings.s3_bucket!r} at {where}",
            settings.s3_presign_s,
        )

    def check(self) -> None:
        probe = f".shapefarm-probe-{secrets.token_hex(8)}"
        try:
            obstore.put(self.store, probe, b"probe")
            obstore.head(self.store, probe)
            obstore.delete(self.store, probe)
        except (BaseError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BlobStoreError(
                f"cannot write to the S3 {self.describe} ({type(exc).__name__}: {first}); "
                "check SHAPEFARM_S3_BUCKET, SHAPEFARM_S3_ENDPOINT, SHAPEFARM_S3_REGION "
                "and the credentials"
            ) from None

    def write(self, job_id: str, kind: str, data: bytes) -> None:
        name = blob_name(job_id, kind)
        if kind == "glb":
            self._drop_derived(job_id)
        obstore.put(self.store, name, data)
        self._unless_deleted(job_id, kind)

    def write_with(self, job_id: str, kind: str, produce: Callable[[BinaryIO], object]) -> None:
        name = blob_name(job_id, kind)
        if kind == "glb":
            self._drop_derived(job_id)
        tmp = spool_with(self.scratch, produce)
        try:
            obstore.put(self.store, name, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        self._unless_deleted(job_id, kind)

    def _unless_deleted(self, job_id: str, kind: str) -> None:
        if kind in DERIVED and not self.exists(job_id, "glb"):
            obstore.delete(self.store, blob_name(job_id, kind))  # deleted while converted

    def _drop_derived(self, job_id: str) -> None:
        obstore.delete(self.store, [blob_name(job_id, kind) for kind in DERIVED])

    def read(self, job_id: str, kind: str) -> bytes:
        try:
            return bytes(obstore.get(self.store, blob_name(job_id, kind)).bytes())
        except MISSING:
            raise FileNotFoundError(blob_name(job_id, kind)) from None

    def open_read(self, job_id: str, kind: str) -> BlobReader:
        try:
            got = obstore.get(self.store, blob_name(job_id, kind))
        except MISSING:
            raise FileNotFoundError(blob_name(job_id, kind)) from None
        return StreamReader(int(got.meta["size"]), iter(got.stream(min_chunk_size=READ_BYTES)))

    def signed_url(self, job_id: str, kind: str) -> str | None:
        if self.presign_s <= 0:
            return None
        expires = timedelta(seconds=self.presign_s)
        return str(obstore.sign(self.store, "GET", blob_name(job_id, kind), expires))

    def exists(self, job_id: str, kind: str) -> bool:
        try:
            obstore.head(self.store, blob_name(job_id, kind))
        except MISSING:
            return False
        return True

    def delete(self, job_id: str) -> None:
        obstore.delete(self.store, [blob_name(job_id, kind) for kind in sorted(KINDS)])

    def sweep_partials(self) -> int:
        return sweep(self.scratch, "**/.incoming-*.part")
