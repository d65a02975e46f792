"""Step 1, land: the provider's current delivery for a source and month, copied into the raw zone unchanged."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from apportion.connectors.base import Delivery, SourceError, landed_delivery
from apportion.connectors.registry import connector_for
from apportion.lake import QUARANTINE
from apportion.models.config import ApportionConfig, SourceConfig


def land(cfg: ApportionConfig, source: SourceConfig, month: str) -> Delivery:
    """Copy the provider's current delivery for the month into the raw zone, unchanged."""
    return connector_for(source).land(month, cfg.raw)


def current_delivery(cfg: ApportionConfig, source: SourceConfig, month: str, pointer: str = "LANDED") -> Delivery:
    """The newest landed delivery (LANDED) or the one the current line items were built from (CURRENT)."""
    delivery = landed_delivery(cfg.raw / source.name / month, pointer)
    if delivery is None:
        raise SourceError(f"{source.name} {month}: nothing landed yet")
    return delivery


def quarantine_file(cfg: ApportionConfig, source: SourceConfig, month: str, error: SourceError) -> Path | None:
    """Keep a copy of an unusable raw file with the reason, for the owner to inspect."""
    qdir = cfg.lake / QUARANTINE / "files" / source.name / month
    qdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record = {"source": source.name, "month": month, "file": error.file, "reason": str(error), "at": stamp}
    landing = sorted((cfg.raw / source.name / month).glob("*"))
    if error.file:
        for d in landing:
            candidate = d / error.file
            if candidate.is_file():
                dest = qdir / f"{stamp}-{Path(error.file).name}"
                shutil.copyfile(candidate, dest)
                record["copy"] = str(dest)
                break
    path = qdir / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2))
    return path
