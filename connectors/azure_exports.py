"""The layout of Azure Cost Management exports in a container: runs found by their manifest.json, the
newest run of a billing period, and the files it delivered. Shared by `azure_cost` (ActualCost /
AmortizedCost) and `focus` (FocusCost exports)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from apportion.connectors.base import DeliveryPlan, SourceError

COST_TYPES = {"actualcost": "ActualCost", "amortizedcost": "AmortizedCost", "usage": "ActualCost",
              "focuscost": "FocusCost"}
# FocusCost dataVersions Cost Management has shipped; anything else is refused rather than misread.
FOCUS_DATA_VERSIONS = {"1.0-preview(v1)": "1.0-preview", "1.0": "1.0", "1.0r2": "1.0", "1.2-preview": "1.2",
                       "1.2": "1.2"}
COST_DATA_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
PERIOD_FOLDER = re.compile(r"(?:^|/)((\d{4})(\d{2})\d{2})-(\d{8})(?:/|$)")
RUN_TIME_FOLDER = re.compile(r"(?:^|/)(\d{12})(?:/|$)")


@dataclass
class ExportRun:
    manifest_key: str
    month: str
    export_name: str
    dataset: str  # ActualCost | AmortizedCost | FocusCost
    data_version: str
    submitted: str
    run_id: str
    blobs: list[str]


def find_runs(store, source, focus_only: bool = False) -> list[ExportRun]:
    """Every export run under the root, from its manifest.json (unusable manifests raise SourceError)."""
    objects, _ = store.list("")
    runs = []
    for o in objects:
        if o.key.rsplit("/", 1)[-1].lower() != "manifest.json":
            continue
        try:
            m = json.loads(store.read_bytes(o.key).decode("utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"manifest {o.key} is not valid JSON ({exc})", file=o.key) from None
        if not isinstance(m, dict) or not isinstance(m.get("blobs"), list):
            raise SourceError(f"manifest {o.key} has no blobs list: not a Cost Management export manifest",
                              file=o.key)
        cfg = m.get("exportConfig") or {}
        run = m.get("runInfo") or {}
        raw_type = str(cfg.get("type") or m.get("dataset") or "")
        dataset = COST_TYPES.get(raw_type.lower(), raw_type or None)
        if dataset is None:  # manifest 2021-01-01: no export config, a cost export by construction
            dataset = "ActualCost"
        if dataset not in ("ActualCost", "AmortizedCost", "FocusCost"):
            continue  # price sheets, reservation details...: not cost line items
        if focus_only and dataset != "FocusCost":
            continue
        month = _month_of_run(o.key, run)
        if month is None:
            raise SourceError(f"manifest {o.key}: cannot tell the billing period (no runInfo.startDate and no "
                              "YYYYMMDD-YYYYMMDD folder)", file=o.key)
        version = str(cfg.get("dataVersion") or "")
        if dataset == "FocusCost" and version not in FOCUS_DATA_VERSIONS:
            raise SourceError(f"manifest {o.key}: unknown FocusCost dataVersion {version!r} "
                              f"(known: {', '.join(FOCUS_DATA_VERSIONS)})", file=o.key)
        if dataset != "FocusCost" and version and not COST_DATA_VERSION.match(version):
            raise SourceError(f"manifest {o.key}: unknown {dataset} dataVersion {version!r}", file=o.key)
        rt = RUN_TIME_FOLDER.search(o.key)
        submitted = str(run.get("submittedTime") or (rt.group(1) if rt else "") or o.last_modified)
        name = str(cfg.get("exportName") or _export_name_from_path(o.key))
        blobs = [str(b.get("blobName") or "") for b in m["blobs"] if isinstance(b, dict)]
        if not blobs or not all(blobs):
            raise SourceError(f"manifest {o.key} lists no blobs", file=o.key)
        runs.append(ExportRun(o.key, month, name, dataset, version, _sortable(submitted),
                              str(run.get("runId") or (o.key.rsplit("/", 2)[-2] if "/" in o.key else "run")), blobs))
    export_name = source.options.get("export_name")
    if export_name:
        runs = [r for r in runs if r.export_name.lower() == str(export_name).lower()]
    return runs


def plan_run(store, source, runs: list[ExportRun], month: str) -> DeliveryPlan:
    """The newest run of the month; its blobs must all exist."""
    mine = [r for r in runs if r.month == month]
    if not mine:
        raise SourceError(f"no Cost Management export run for {month} under {source.uri}")
    names = sorted({r.export_name for r in mine})
    if len(names) > 1:
        raise SourceError(f"{len(names)} exports deliver {month} under {source.uri} ({', '.join(names)}): loading "
                          "more than one would count the month twice; set options.export_name")
    newest = max(mine, key=lambda r: (r.submitted, r.manifest_key))
    listed, _ = store.list("")
    by_key = {o.key: o for o in listed}
    chosen = []
    folder = newest.manifest_key.rsplit("/", 1)[0] + "/" if "/" in newest.manifest_key else ""
    for blob in newest.blobs:
        key = _blob_key(blob, by_key, folder, store)
        if key is None:
            raise SourceError(f"manifest {newest.manifest_key} names {blob}, which does not exist", file=newest.manifest_key)
        chosen.append(by_key[key])
    notes = [f"{len(mine)} runs found; loaded the newest ({newest.submitted})"] if len(mine) > 1 else []
    layout = f"azure-{newest.dataset}" + (f"-{newest.data_version}" if newest.data_version else "")
    return DeliveryPlan(month, f"{newest.run_id}", chosen, newest.manifest_key, layout, notes=notes)


def _blob_key(blob: str, by_key: dict, folder: str, store) -> str | None:
    """A manifest blobName (container-relative, sometimes with the container) -> key under our root."""
    name = blob.split("://", 1)[-1].lstrip("/")
    root = getattr(store, "root_prefix", "")
    candidates = [name]
    if root and name.startswith(root):
        candidates.insert(0, name[len(root):])
    parts = name.split("/")
    candidates += ["/".join(parts[i:]) for i in range(1, len(parts))]  # container or root folders in front
    candidates.append(folder + parts[-1])
    for c in candidates:
        if c in by_key:
            return c
    return None


def _month_of_run(key: str, run: dict) -> str | None:
    start = str(run.get("startDate") or "")
    if re.match(r"^\d{4}-\d{2}", start):
        return start[:7]
    m = PERIOD_FOLDER.search(key)
    return f"{m.group(2)}-{m.group(3)}" if m else None


def _export_name_from_path(key: str) -> str:
    """Folder before the period folder (`<export>/<YYYYMMDD-YYYYMMDD>/...`) or after it."""
    parts = key.split("/")
    for i, p in enumerate(parts):
        if PERIOD_FOLDER.search("/" + p + "/"):
            if i > 0:
                return parts[i - 1]
            if i + 1 < len(parts) - 1 and not RUN_TIME_FOLDER.search("/" + parts[i + 1] + "/"):
                return parts[i + 1]
    return "export"


def _sortable(ts: str) -> str:
    """ISO time or a YYYYMMDDHHmm run folder -> sortable ISO text."""
    if re.fullmatch(r"\d{12}", ts):
        return f"{ts[:4]}-{ts[4:6]}-{ts[6:8]}T{ts[8:10]}:{ts[10:12]}:00"
    return ts
