"""Pruning the lake on an object store is idempotent: two warehouse builds may remove the same old version."""

from __future__ import annotations


def test_deleting_objects_another_build_already_pruned_is_no_error(s3_bucket, monkeypatch):
    """Seen once under load: two warehouse runs both pruned the same old version; the second listed its objects, the
    first deleted them, and the second's delete raised FileNotFoundError after its warehouse was published."""
    from apportion.storage import Remote

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    store = Remote(f"s3://{s3_bucket.name}/lake")
    for name in ("data_0.parquet", "data_1.parquet"):
        store.put_bytes(f"line_items/x_SourceName=a/x_BillingMonth=2026-10/v-1/{name}", b"PAR1")
    prefix = "line_items/x_SourceName=a/x_BillingMonth=2026-10/v-1"
    listed = store.list_files(prefix)
    assert len(listed) == 2
    store.delete_prefix(prefix)  # the first build
    assert store.list_files(prefix) == []
    monkeypatch.setattr(Remote, "list_files", lambda self, rel: listed)  # the second build's listing, taken before
    store.delete_prefix(prefix)
    store.delete_prefix(f"{prefix}/data_0.parquet")
    assert s3_bucket.keys(prefix) == []
