"""Model files in an S3-compatible bucket: moto's server on 127.0.0.1 plays S3.

A real agent's result goes through the real upload path into the bucket (nothing
under the data dir's models/), downloads stream from it through the JSON API or
redirect to a signed URL, conversions are cached in it, a missing object is a
clean 404, and bad credentials stop the coordinator at start-up with a reason.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import Secret

from coordinator.settings import SettingsError, load_settings
from coordinator.store.storage import make_blob_store
from tests.support.coordinators import (
    ROOT,
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)
from tests.support.procs import coordinator_env, free_port
from tests.support.s3server import S3Server, running_s3

pytestmark = pytest.mark.slow


def _s3(s3: S3Server, **more: object) -> dict[str, object]:
    return {
        "blob_store": "s3",
        "s3_bucket": s3.bucket,
        "s3_endpoint": s3.endpoint,
        "s3_region": "us-east-1",
        "s3_prefix": "farm",
        "s3_access_key_id": s3.access_key_id,
        "s3_secret_access_key": Secret(s3.secret_access_key),
        **more,
    }


async def test_results_go_to_the_bucket_and_download_from_it(tmp_path: Path) -> None:
    async with running_s3(tmp_path / "moto.log") as s3:
        data = tmp_path / "data"
        settings = make_settings(data, **_s3(s3))
        key, token_file = await provision(settings, tmp_path)
        async with running_coordinator(settings) as coord, api_client(coord, key) as client:
            agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
            try:
                created = await client.post("/api/v1/jobs", json={"prompt": "a teapot"})
                job_id = created.json()["jobs"][0]["id"]

                async def done() -> bool:
                    state = (await client.get(f"/api/v1/jobs/{job_id}")).json()["state"]
                    assert state not in {"failed", "cancelled"}
                    return bool(state == "succeeded")

                await wait_for(done, 60, "the job to succeed with an S3 blob store")
            finally:
                assert await stop_agent(agent) == 0
            shard = job_id[:2]
            assert f"farm/{shard}/{job_id}.glb" in s3.object_keys()
            assert not list(data.glob("models/*/*.glb"))  # nothing on local disk
            assert not list((data / "scratch").glob("**/.incoming-*"))  # temp files removed

            glb = await client.get(f"/api/v1/jobs/{job_id}/download/glb")
            assert glb.status_code == 200, glb.text
            assert glb.content[:4] == b"glTF"
            assert int(glb.headers["content-length"]) == len(glb.content)
            assert "attachment" in glb.headers["content-disposition"]
            # A conversion is made once and kept in the bucket next to the model.
            obj = await client.get(f"/api/v1/jobs/{job_id}/download/obj")
            assert obj.status_code == 200 and b"\nv " in obj.content
            assert f"farm/{shard}/{job_id}.obj" in s3.object_keys()

        # Another coordinator (think: a replica) signs URLs instead of streaming.
        signing = make_settings(data, **_s3(s3, s3_presign_s=60.0))
        async with running_coordinator(signing) as coord, api_client(coord, key) as client:
            moved = await client.get(f"/api/v1/jobs/{job_id}/download/glb")
            assert moved.status_code == 307
            assert moved.headers["cache-control"] == "no-store"
            location = moved.headers["location"]
            await s3.stop_checking_credentials()  # see there: moto checks no signed URL
            assert location.startswith(f"{s3.endpoint}/{s3.bucket}/farm/{shard}/{job_id}.glb?")
            assert "X-Amz-Signature=" in location and "X-Amz-Expires=60" in location
            async with httpx.AsyncClient(timeout=30) as outsider:  # no API key, no cookie
                fetched = await outsider.get(location)
            assert fetched.status_code == 200 and fetched.content == glb.content

            # The object vanished behind the coordinator's back: a clean 404, no 500.
            s3.client().delete_object(Bucket=s3.bucket, Key=f"farm/{shard}/{job_id}.glb")
            for fmt in ("glb", "stl"):
                gone = await client.get(f"/api/v1/jobs/{job_id}/download/{fmt}")
                assert gone.status_code == 404, gone.text
                assert gone.json()["error"]["code"] == "not_found"

            # Deleting the job deletes what is left of it in the bucket.
            assert (await client.delete(f"/api/v1/jobs/{job_id}")).status_code in {200, 204}
            assert not {k for k in s3.object_keys() if job_id in k}


async def test_bad_credentials_stop_the_start_with_a_reason(tmp_path: Path) -> None:
    async with running_s3(tmp_path / "moto.log") as s3:
        env = {
            **os.environ,
            **coordinator_env(
                blob_store="s3",
                s3_bucket=s3.bucket,
                s3_endpoint=s3.endpoint,
                s3_region="us-east-1",
                s3_access_key_id=s3.access_key_id,
                s3_secret_access_key="not-the-secret",
            ),
        }
        argv = [sys.executable, "-m", "coordinator.cli", "coordinator", "--data-dir",
                str(tmp_path / "data"), "--port", str(free_port())]  # fmt: skip
        done = subprocess.run(  # noqa: ASYNC221 - the coordinator is meant to exit at once
            argv, cwd=ROOT, env=env, capture_output=True, timeout=120
        )
        assert done.returncode != 0
        out = done.stdout.decode() + done.stderr.decode()
        assert f"cannot write to the S3 bucket '{s3.bucket}' at {s3.endpoint}" in out
        assert "PermissionDenied" in out and "credentials" in out
        assert "not-the-secret" not in out  # the secret is never shown

        # The store's check says the same to whoever calls it (e.g. a health probe).
        store = make_blob_store(
            make_settings(tmp_path / "d2", **_s3(s3, s3_secret_access_key=Secret("nope")))
        )
        with pytest.raises(Exception, match="cannot write to the S3 bucket"):
            store.check()


def test_s3_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="s3_bucket is required"):
        load_settings({"blob_store": "s3"}, environ={})
    with pytest.raises(SettingsError, match="blob_store must be one of"):
        load_settings({}, environ={"SHAPEFARM_BLOB_STORE": "ftp"})
    with pytest.raises(SettingsError, match="go together"):
        load_settings({"blob_store": "s3", "s3_bucket": "b", "s3_access_key_id": "k"}, environ={})
    with pytest.raises(SettingsError, match="s3_presign_s"):
        load_settings({"s3_presign_s": 8 * 86400.0}, environ={})
    with pytest.raises(SettingsError, match="s3_endpoint"):
        load_settings({"blob_store": "s3", "s3_bucket": "b", "s3_endpoint": "ftp://x"}, environ={})
    settings = load_settings({}, environ={})
    assert settings.blob_store == "local"


async def test_large_objects_stream_in_bounded_chunks(tmp_path: Path) -> None:
    async with running_s3(tmp_path / "moto.log") as s3:
        store = make_blob_store(make_settings(tmp_path / "data", **_s3(s3)))
        store.check()
        body = os.urandom(3 * 1024 * 1024 + 17)
        await asyncio.to_thread(store.write_with, "bigjob", "glb", lambda out: out.write(body))
        reader = await asyncio.to_thread(store.open_read, "bigjob", "glb")
        assert reader.size == len(body)
        chunks: list[bytes] = []
        while chunk := await asyncio.to_thread(reader.read_chunk):
            assert len(chunk) <= 1024 * 1024  # never the whole object at once
            chunks.append(chunk)
        reader.close()
        assert len(chunks) >= 3 and b"".join(chunks) == body
        assert not list((tmp_path / "data" / "scratch").iterdir())  # the temp file is gone
        with pytest.raises(FileNotFoundError):
            store.open_read("nosuchjob", "glb")
        with pytest.raises(FileNotFoundError):
            store.read("nosuchjob", "png")
        assert not store.exists("nosuchjob", "glb")
        store.delete("nosuchjob")  # nothing to delete is fine
