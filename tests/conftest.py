"""Shared pytest fixtures.

S3 fixtures (`s3_server`, `s3_bucket`): a real moto S3 server on 127.0.0.1 spoken to over HTTP by
plain boto3 clients — no patched client, no in-process mock. Other fixture groups may be added
below; keep each group self-contained.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO_ROOT))


# ---------------------------------------------------------------------------------- S3 (moto server)
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never pick up a developer's real profile, config or session token.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
S3_TEST_ENV_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str  # http://127.0.0.1:<port>

    def client(self):
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server over HTTP for the whole session, with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for k, v in S3_TEST_ENV.items():
        mp.setenv(k, v)
    for k in S3_TEST_ENV_UNSET:
        mp.delenv(k, raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        mp.undo()


@dataclass
class S3Bucket:
    name: str
    client: object
    endpoint_url: str

    def put(self, key: str, body: bytes | str) -> str:
        """Upload one object; returns its ETag (unquoted)."""
        if isinstance(body, str):
            body = body.encode()
        resp = self.client.put_object(Bucket=self.name, Key=key, Body=body)
        return resp["ETag"].strip('"')

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, uniquely named bucket on the moto server (tests never share state)."""
    client = s3_server.client()
    name = f"apportion-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield S3Bucket(name, client, s3_server.endpoint_url)
    bucket = S3Bucket(name, client, s3_server.endpoint_url)
    for key in bucket.keys():
        bucket.delete(key)
    client.delete_bucket(Bucket=name)
