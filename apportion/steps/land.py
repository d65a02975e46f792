"""Step 1, land: the provider's current delivery for a source and month, copied into the raw zone unchanged.

With `raw:` on object storage the object store is the raw zone's record and `cfg.raw` its local cache: a
landed delivery is uploaded whole (its `delivery.json` last), its landing record is kept as one object per
landing (`<source>/<month>/deliveries/…json`), then the `LANDED` object is PUT; the line-items step reads
a local copy of the delivery that pointer names, and `publish_raw_current` PUTs `CURRENT` once it built.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from apportion.connectors.base import Delivery, SourceError, landed_delivery
from apportion.connectors.registry import connector_for
from apportion.lake import QUARANTINE
from apportion.models.config import ApportionConfig, SourceConfig
from apportion.storage import Remote, remote_for, work_suffix, write_pointer


def land(cfg: ApportionConfig, source: SourceConfig, month: str) -> Delivery:
    """Copy the provider's current delivery for the month into the raw zone, unchanged."""
    remote = remote_for(cfg.raw)
    if remote:  # the cache holds what is already landed, so an unchanged delivery is reused, not fetched again
        _pull_delivery(cfg, remote, source, month, "LANDED")
    delivery = connector_for(source).land(month, cfg.raw)
    if remote:
        _push_delivery(cfg, remote, delivery)
    return delivery


def current_delivery(cfg: ApportionConfig, source: SourceConfig, month: str, pointer: str = "LANDED") -> Delivery:
    """The newest landed delivery (LANDED) or the one the current line items were built from (CURRENT)."""
    remote = remote_for(cfg.raw)
    delivery = (_pull_delivery(cfg, remote, source, month, pointer) if remote
                else landed_delivery(cfg.raw / source.name / month, pointer))
    if delivery is None:
        raise SourceError(f"{source.name} {month}: nothing landed yet")
    return delivery


def publish_raw_current(cfg: ApportionConfig, source: SourceConfig, month: str) -> None:
    """After the line items built: the raw zone's CURRENT object names the delivery they came from (a no-op for a
    local raw zone, where the line-items step already switched the CURRENT file)."""
    remote = remote_for(cfg.raw)
    pointer = cfg.raw / source.name / month / "CURRENT"
    if remote and pointer.is_file():
        remote.put_bytes(f"{source.name}/{month}/CURRENT", pointer.read_bytes())


def sync_raw_records(cfg: ApportionConfig) -> int:
    """For a lake-wide reader (the warehouse's `deliveries` table): every month's landing records
    (`deliveries.jsonl`) and CURRENT pointer from the object store into the cache. Returns the months synced."""
    remote = remote_for(cfg.raw)
    if not remote:
        return 0
    synced = 0
    for source in remote.list_dir("")[1]:  # one listing per level, never the raw files themselves
        for month in remote.list_dir(source)[1]:
            rel = f"{source}/{month}"
            pointers = remote.list_dir(rel)[0]
            records = sorted(remote.list_dir(f"{rel}/deliveries")[0])
            if not records:
                continue
            month_dir = cfg.raw / rel
            month_dir.mkdir(parents=True, exist_ok=True)
            lines = [remote.get_text(f"{rel}/deliveries/{name}") for name in records if name.endswith(".json")]
            tmp = month_dir / f"deliveries.jsonl.tmp-{work_suffix()}"
            tmp.write_text("".join(json.dumps(json.loads(text)) + "\n" for text in lines if text))
            tmp.replace(month_dir / "deliveries.jsonl")
            if "CURRENT" in pointers:
                write_pointer(month_dir / "CURRENT", (remote.get_text(f"{rel}/CURRENT") or "").strip())
            synced += 1
    return synced


def _record(delivery: Delivery | dict) -> dict:
    d = dataclasses.asdict(delivery) if isinstance(delivery, Delivery) else dict(delivery)
    return {k: v for k, v in d.items() if k not in ("reused", "local_dir")}


def _pull_delivery(cfg: ApportionConfig, remote: Remote, source: SourceConfig, month: str,
                   pointer: str) -> Delivery | None:
    """The delivery the object store's `pointer` names, in the local cache (downloaded when the cache lacks it or
    holds another landing of the same id); None when the pointer does not exist."""
    rel_month = f"{source.name}/{month}"
    name = (remote.get_text(f"{rel_month}/{pointer}") or "").strip()
    if not name:
        return None
    month_dir = cfg.raw / source.name / month
    target = month_dir / name
    record_text = remote.get_text(f"{rel_month}/{name}/delivery.json")
    if record_text is None:
        raise SourceError(f"{source.name} {month}: {remote.uri_of(rel_month)}/{pointer} names delivery {name}, "
                          "whose delivery.json is missing from the object store")
    wanted = json.loads(record_text)
    local = target / "delivery.json"
    if not (local.is_file() and _record(json.loads(local.read_text())) == _record(wanted)):
        month_dir.mkdir(parents=True, exist_ok=True)
        fresh = month_dir / f"{name}.pull"
        shutil.rmtree(fresh, ignore_errors=True)
        remote.download_dir(f"{rel_month}/{name}", fresh)
        # the record names the folder it was landed in on another machine: here it is this cache's folder
        (fresh / "delivery.json").write_text(json.dumps({**wanted, "local_dir": str(target)}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        fresh.rename(target)
    write_pointer(month_dir / pointer, name)
    return landed_delivery(month_dir, pointer)


def _push_delivery(cfg: ApportionConfig, remote: Remote, delivery: Delivery) -> None:
    """Upload a landed delivery (unless the object store already holds this very landing), its landing record, then
    PUT LANDED: a worker killed before that PUT leaves the previous LANDED delivery in force."""
    target = Path(delivery.local_dir)
    rel_month = f"{delivery.source}/{delivery.month}"
    rel = f"{rel_month}/{target.name}"
    there = remote.get_text(f"{rel}/delivery.json")
    if there is None or _record(json.loads(there)) != _record(delivery):
        remote.upload_dir(target, rel, last="delivery.json")
        stamp = delivery.fetched_at.replace(":", "").replace("+", "p")
        remote.put_bytes(f"{rel_month}/deliveries/{stamp}-{target.name}.json",
                         json.dumps({k: v for k, v in dataclasses.asdict(delivery).items() if k != "reused"}).encode())
    remote.put_bytes(f"{rel_month}/LANDED", (target.name + "\n").encode())


def quarantine_file(cfg: ApportionConfig, source: SourceConfig, month: str, error: SourceError) -> Path | None:
    """Keep a copy of an unusable raw file with the reason, for the owner to inspect."""
    qdir = cfg.lake / QUARANTINE / "files" / source.name / month
    qdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record = {"source": source.name, "month": month, "file": error.file, "reason": str(error), "at": stamp}
    landing = sorted((cfg.raw / source.name / month).glob("*"))
    copied = None
    if error.file:
        for d in landing:
            candidate = d / error.file
            if candidate.is_file():
                copied = qdir / f"{stamp}-{Path(error.file).name}"
                shutil.copyfile(candidate, copied)
                record["copy"] = str(copied)
                break
    path = qdir / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2))
    remote = remote_for(cfg.lake)
    if remote:  # the object store is the lake's record: the owner finds the copy there too
        for p in (copied, path):
            if p is not None:
                remote.upload_file(p, p.relative_to(cfg.lake).as_posix())
    return path
