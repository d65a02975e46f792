"""Writes to S3 (moto over HTTP, read back with boto3): an object smaller than one upload part goes up in a single
PutObject (its ETag is the plain MD5 of the bytes, not a multipart `-N` ETag), a large one still in parts, and a write
that fails is an error when the stream closes, never a silent loss."""

from __future__ import annotations

import hashlib

import pytest


def _etag(s3_bucket, key: str) -> str:
    return s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)["ETag"].strip('"')


def test_a_pointer_and_a_small_file_are_one_put_and_a_large_file_goes_in_parts(s3_bucket, tmp_path, monkeypatch):
    from apportion.storage import Remote

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    store = Remote(f"s3://{s3_bucket.name}/lake")
    pointer = b"v-20261202T080000Z-0a1b2c3d\n"
    store.put_bytes("line_items/x_SourceName=a/x_BillingMonth=2026-10/CURRENT", pointer)
    key = "lake/line_items/x_SourceName=a/x_BillingMonth=2026-10/CURRENT"
    assert _etag(s3_bucket, key) == hashlib.md5(pointer).hexdigest()  # one PutObject

    small = tmp_path / "data_0.parquet"
    small.write_bytes(b"PAR1" + bytes(range(256)) * 400 + b"PAR1")
    store.upload_file(small, "line_items/x_SourceName=a/x_BillingMonth=2026-10/v-1/data_0.parquet")
    assert _etag(s3_bucket, "lake/line_items/x_SourceName=a/x_BillingMonth=2026-10/v-1/data_0.parquet") \
        == hashlib.md5(small.read_bytes()).hexdigest()

    large = tmp_path / "data_1.parquet"
    large.write_bytes(bytes(range(256)) * (12 * 4096))  # 12 MiB: more than Arrow's 10 MiB part
    store.upload_file(large, "line_items/x_SourceName=a/x_BillingMonth=2026-10/v-1/data_1.parquet")
    key = "lake/line_items/x_SourceName=a/x_BillingMonth=2026-10/v-1/data_1.parquet"
    assert "-" in _etag(s3_bucket, key)  # a multipart upload
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
    assert body == large.read_bytes()


def test_a_write_that_fails_is_an_error_at_close(s3_bucket, monkeypatch):
    """With the open delayed, a missing bucket is only found when the bytes go up: it must still raise."""
    from apportion.storage import Remote

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    store = Remote(f"s3://{s3_bucket.name}-missing/lake")
    with pytest.raises(OSError):
        store.put_bytes("line_items/CURRENT", b"v-1\n")
