"""moto's standalone S3-compatible server on 127.0.0.1 for tests, with credentials
checked: the first requests (made here, to create an IAM user with an access key
allowed everything, and a bucket) are the only unauthenticated ones."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.coordinators import wait_for
from tests.support.procs import free_port

# CreateUser, PutUserPolicy, CreateAccessKey, CreateBucket; everything after is checked.
SETUP_CALLS = 4
ALLOW_ALL = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    pid: int

    async def stop_checking_credentials(self) -> None:
        """moto cannot check a signed URL's query-string signature (it wants an
        Authorization header), so presigned downloads are tested with checks off."""
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf")
        answer.raise_for_status()

    def client(self) -> Any:
        """A boto3 S3 client with the farm's key (to look into the bucket)."""
        import boto3  # moto's dependency (dev only)

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def object_keys(self) -> set[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return {str(item["Key"]) for item in listing.get("Contents", [])}


def _setup(endpoint: str, bucket: str) -> tuple[str, str]:
    import boto3  # moto's dependency (dev only)

    common = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "setup",
        "aws_secret_access_key": "setup",
    }
    iam = boto3.client("iam", **common)
    iam.create_user(UserName="farm")
    iam.put_user_policy(UserName="farm", PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="farm")["AccessKey"]
    boto3.client("s3", **common).create_bucket(Bucket=bucket)
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


@contextlib.asynccontextmanager
async def running_s3(log: Path) -> AsyncIterator[S3Server]:
    """moto_server on a free port; stopped by its PID on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is quick
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with httpx.AsyncClient(timeout=2) as client:

            async def up() -> bool:
                assert proc.poll() is None, log.read_text()  # noqa: ASYNC240 - on failure
                try:
                    return (await client.get(f"{endpoint}/moto-api/")).status_code < 500
                except httpx.TransportError:
                    return False

            await wait_for(up, 30, "moto's S3 server to answer", interval=0.05)
        bucket = f"models-{secrets.token_hex(4)}"
        key_id, secret = _setup(endpoint, bucket)
        yield S3Server(endpoint, bucket, key_id, secret, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
