"""OpenCost allocation API: GPU-hours per Kubernetes pod / namespace / label, per day, with the idle GPUs.

`uri` (or the `base_url` option) is the OpenCost API (`http://opencost.opencost:9003`) or a folder of
recorded responses (`file:///path` or a plain path) named `allocation-YYYY-MM-DD.json` (one day) or
`allocation-YYYY-MM.json` (a month with `step=1d`), as written by `apportion.demo.generators.gpu`.

For every day of the month (up to today) the connector asks

    GET /allocation?window=<day>T00:00:00Z,<day+1>T00:00:00Z&step=1d&aggregate=<aggregate>
        &accumulate=false&includeIdle=true&shareIdle=false&idleByNode=<idle_by_node>

and lands each response unchanged (`raw/<source>/<month>/<delivery>/allocation-<day>.json`). An optional
bearer token for a proxy in front of OpenCost comes from the environment (`OPENCOST_BEARER_TOKEN`),
never from the config.

Allocations with GPU-hours (or GPU cost) become usage line items: ConsumedQuantity = `gpuHours`,
x_PricedCost = `gpuCost + gpuCostAdjustment` (OpenCost's estimate, not billed money) or the rate card
when `rates` are configured, x_GpuUtilization = `gpuEfficiency` (DCGM GR_ENGINE_ACTIVE / request).
`__idle__` (or `<cluster>/<node>/__idle__` with idleByNode) becomes the idle line, attributed by
the `idle.owner` option. Namespace, namespace labels and pod labels become Tags.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator

from apportion.connectors.base import Delivery, SourceError, _point, safe_dirname
from apportion.connectors.gpu_files import GpuConnector
from apportion.connectors.http import open_url
from apportion.models.gpu_rates import (
    GpuOptions,
    gpu_model_of_instance,
    month_bounds,
    normalize_gpu_model,
)

TOKEN_ENV = "OPENCOST_BEARER_TOKEN"
DAY_FILE = re.compile(r"^allocation-(\d{4}-\d{2})(-\d{2})?\.json$")
IDLE = "__idle__"
UNALLOCATED = "__unallocated__"
LABEL_KEY = re.compile(r"[^a-z0-9_.:/-]+")
# node labels OpenCost passes on to allocations (sanitised): the instance type of the node
INSTANCE_TYPE_LABELS = ("node_kubernetes_io_instance_type", "beta_kubernetes_io_instance_type",
                        "karpenter_k8s_aws_instance_type")


class OpencostOptions(GpuOptions):
    base_url: str | None = Field(None, description="OpenCost API root or folder of recorded responses; default: uri.")
    aggregate: str = Field("namespace,pod", description="OpenCost aggregate parameter.")
    idle_by_node: bool = True
    default_gpu_model: str | None = None
    since: str | None = Field(None, description="First month to ask the API for (YYYY-MM); default: last month.")
    timeout: float = Field(60, gt=0)

    @field_validator("aggregate")
    @classmethod
    def _aggregate(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",") if p.strip()]
        ok = re.compile(r"^(cluster|node|namespace|controllerKind|controller|service|pod|container|"
                        r"(label|annotation):[A-Za-z0-9_.\-/]+)$")
        bad = [p for p in parts if not ok.match(p)]
        if not parts or bad:
            raise ValueError(f"aggregate {v!r}: unknown property {bad[0] if bad else ''!r}")
        return ",".join(parts)

    @field_validator("since")
    @classmethod
    def _since(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d{4}-(0[1-9]|1[0-2])$", v):
            raise ValueError("since must look like YYYY-MM")
        return v


def _today() -> date:
    return datetime.now(timezone.utc).date()


class OpencostConnector(GpuConnector):
    kind = "opencost"
    line_items_sql = "opencost.sql"
    options_model = OpencostOptions
    opts: OpencostOptions

    def __init__(self, source):
        super().__init__(source)
        if self.opts.capacity:
            raise SourceError(f"sources[{source.name}].options.capacity: not used by opencost "
                              "(OpenCost reports idle GPUs itself as __idle__)")
        base = self.opts.base_url or source.uri
        parsed = urllib.parse.urlparse(base)
        if parsed.scheme in ("http", "https"):
            self.base_url: str | None = base.rstrip("/")
            self.folder: Path | None = None
        elif parsed.scheme == "file":
            self.base_url, self.folder = None, Path(urllib.parse.unquote(parsed.path))
        elif parsed.scheme == "" or len(parsed.scheme) == 1:
            self.base_url, self.folder = None, Path(base)
        else:
            raise SourceError(f"sources[{source.name}]: unsupported OpenCost URL scheme {parsed.scheme!r}")

    # ---------------------------------------------------------------- discovery
    def months(self) -> list[str]:
        if self.folder is not None:
            if not self.folder.is_dir():
                raise SourceError(f"OpenCost response folder {self.folder} does not exist")
            return sorted({m.group(1) for p in self.folder.iterdir() if (m := DAY_FILE.match(p.name))})
        today = _today()
        first = self.opts.since or f"{(today.replace(day=1) - timedelta(days=1)):%Y-%m}"
        out, y, m = [], int(first[:4]), int(first[5:])
        while (y, m) <= (today.year, today.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    def query(self, day: date) -> dict[str, str]:
        end = day + timedelta(days=1)
        return {
            "window": f"{day:%Y-%m-%d}T00:00:00Z,{end:%Y-%m-%d}T00:00:00Z",
            "step": "1d",
            "aggregate": self.opts.aggregate,
            "accumulate": "false",
            "includeIdle": "true",
            "shareIdle": "false",
            "idleByNode": "true" if self.opts.idle_by_node else "false",
        }

    def _days(self, month: str) -> list[date]:
        start, end = month_bounds(month)
        last = min(end.date() - timedelta(days=1), _today())
        d, out = start.date(), []
        while d <= last:
            out.append(d)
            d += timedelta(days=1)
        return out

    def _fetch(self, month: str) -> list[tuple[str, bytes, str]]:
        """(file name, response bytes, what was asked) for every page of the month."""
        pages: list[tuple[str, bytes, str]] = []
        if self.folder is not None:
            monthly = self.folder / f"allocation-{month}.json"
            if monthly.is_file():
                pages.append((monthly.name, monthly.read_bytes(), str(monthly)))
            for d in self._days(month):
                p = self.folder / f"allocation-{d:%Y-%m-%d}.json"
                if p.is_file():
                    pages.append((p.name, p.read_bytes(), str(p)))
            return pages
        headers = {"Accept": "application/json", "User-Agent": "apportion"}
        token = os.environ.get(TOKEN_ENV)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for d in self._days(month):
            url = f"{self.base_url}/allocation?{urllib.parse.urlencode(self.query(d))}"
            name = f"allocation-{d:%Y-%m-%d}.json"
            try:
                with open_url(urllib.request.Request(url, headers=headers), timeout=self.opts.timeout) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as exc:
                raise SourceError(f"OpenCost {self.base_url}/allocation for {d}: HTTP {exc.code} {exc.reason}",
                                  file=name) from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise SourceError(f"OpenCost {self.base_url}/allocation for {d}: {reason}", file=name) from None
            pages.append((name, body, url))
        return pages

    def land(self, month: str, raw_root: Path) -> Delivery:
        pages = self._fetch(month)
        if not pages:
            raise SourceError(f"OpenCost has no allocation data for {month} at {self.opts.base_url or self.source.uri}")
        for name, body, _ in pages:
            check_response(name, body)
        objects = [{"key": name, "size": len(body), "etag": hashlib.sha1(body).hexdigest(), "last_modified": asked}
                   for name, body, asked in pages]
        digest = hashlib.sha1("".join(o["key"] + o["etag"] for o in objects).encode()).hexdigest()[:16]
        delivery_id = f"opencost-{digest}"
        month_dir = raw_root / self.source.name / month
        target = month_dir / safe_dirname(delivery_id)
        if (target / "delivery.json").exists():
            old = json.loads((target / "delivery.json").read_text())
            _point(month_dir, "LANDED", target.name)
            return Delivery(**{**old, "reused": True})
        staging = month_dir / (target.name + ".landing")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for name, body, _ in pages:
            (staging / name).write_bytes(body)
        delivery = Delivery(source=self.source.name, kind=self.kind, month=month, delivery_id=delivery_id,
                            layout="opencost-allocation", manifest_key=None, objects=objects,
                            fetched_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), local_dir=str(target))
        (staging / "delivery.json").write_text(json.dumps(asdict(delivery), indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        with open(month_dir / "deliveries.jsonl", "a") as log:
            log.write(json.dumps({k: v for k, v in asdict(delivery).items() if k != "reused"}) + "\n")
        _point(month_dir, "LANDED", target.name)
        return delivery

    # ---------------------------------------------------------------- staging
    def staged_rows(self, name: str, body: bytes) -> list[dict[str, Any]]:
        doc = check_response(name, body)
        fields = self.opts.aggregate.split(",")
        rows: list[dict[str, Any]] = []
        n = 0
        for allocations in doc["data"]:
            for key in sorted(allocations or {}):
                n += 1
                rows.append(self._row(name, n, key, allocations[key], fields))
        return [r for r in rows if r is not None]

    def _row(self, file: str, n: int, key: str, a: Any, fields: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"_file": file, "_row": n, "name": key}
        problems: list[str] = []
        if not isinstance(a, dict):
            row["problem"] = f"allocation {key}: not a JSON object"
            return row
        props = a.get("properties") or {}
        window = a.get("window") or {}
        for col, src in (("window_start", window.get("start")), ("window_end", window.get("end"))):
            try:
                row[col] = datetime.fromisoformat(str(src).replace("Z", "+00:00")).astimezone(timezone.utc)
            except (TypeError, ValueError):
                problems.append(f"unparseable window.{col[7:]} {src!r}")
        is_idle = key == IDLE or key.endswith("/" + IDLE) or a.get("name", "").endswith(IDLE)
        row["is_idle"] = is_idle
        # the aggregate key ('ns/team-a') names the grouped properties; __unallocated__ = not set
        from_key: dict[str, str] = {}
        parts = key.split("/")
        if not is_idle and len(parts) == len(fields):
            from_key = {f: v for f, v in zip(fields, parts) if v and v != UNALLOCATED}
        row["cluster"] = props.get("cluster") or from_key.get("cluster") or self.opts.cluster or "default"
        row["node"] = props.get("node") or from_key.get("node")
        row["provider_id"] = props.get("providerID")
        row["namespace"] = props.get("namespace") or from_key.get("namespace")
        row["pod"] = props.get("pod") or from_key.get("pod")
        row["controller"] = props.get("controller") or from_key.get("controller")
        labels: dict[str, str] = {}
        for src in (props.get("namespaceLabels") or {}, props.get("labels") or {}):
            for k, v in src.items():
                if v not in (None, ""):
                    labels[tag_key(k)] = str(v)
        for f, v in from_key.items():
            if f.startswith("label:"):
                labels[tag_key(f[6:])] = v
        if row["namespace"]:
            labels["namespace"] = row["namespace"]
        if row["controller"]:
            labels["k8s_controller"] = row["controller"]
        row["tags"] = json.dumps(dict(sorted(labels.items()))) if labels else None
        row["instance_type"] = next((labels[k] for k in INSTANCE_TYPE_LABELS if labels.get(k)), None)
        gpu_alloc = a.get("gpuAllocation") or {}
        for col, src in (("gpu_hours", a.get("gpuHours")), ("gpu_cost", a.get("gpuCost")),
                         ("gpu_cost_adjustment", a.get("gpuCostAdjustment")), ("gpu_count", a.get("gpuCount")),
                         ("gpu_efficiency", a.get("gpuEfficiency")),
                         ("gpu_usage_average", gpu_alloc.get("gpuUsageAverage")),
                         ("gpu_request_average", gpu_alloc.get("gpuRequestAverage"))):
            if src is None:
                row[col] = None
            elif isinstance(src, (int, Decimal)) and not isinstance(src, bool) and Decimal(src).is_finite():
                row[col] = Decimal(src).quantize(Decimal("0.000000000001"))
            else:
                problems.append(f"non-numeric {col_name(col)} {src!r}")
                row[col] = None
        if row.get("gpu_hours") is not None and row["gpu_hours"] < 0:
            problems.append(f"negative gpuHours {row['gpu_hours']}")
        model = gpu_alloc.get("gpuModel") or self.opts.default_gpu_model
        # one GPU vocabulary (models/reference/gpu_models.csv); else the node's instance type (p5.48xlarge: H100)
        row["gpu_model"] = normalize_gpu_model(model) if model else gpu_model_of_instance(row.get("instance_type"))
        util = row.get("gpu_efficiency")
        if util is None and row.get("gpu_usage_average") is not None and row.get("gpu_request_average"):
            util = row["gpu_usage_average"] / row["gpu_request_average"]
        row["gpu_util"] = min(max(util, Decimal(0)), Decimal(1)).quantize(Decimal("0.000001")) if util is not None else None
        if not gpu_alloc and row.get("gpu_efficiency") == 0:
            row["gpu_util"] = None  # OpenCost reports 0 when it has no DCGM data
        row["problem"] = f"allocation {key}: " + "; ".join(problems) if problems else None
        return row

    def stage_sql(self, con, delivery: Delivery) -> str:
        rows: list[dict[str, Any]] = []
        for key, path in delivery.files:
            rows.extend(self.staged_rows(key, Path(path).read_bytes()))
        return self.stage_rows(con, "stg_opencost", rows, STAGE_SCHEMA)

    def file_select(self, con, key: str, path: Path, file_idx: int) -> str:
        check_response(key, Path(path).read_bytes())
        return "SELECT 1"


def check_response(name: str, body: bytes) -> dict:
    """A page is usable when it is JSON with code 200 and a list of allocation sets."""
    try:
        doc = json.loads(body, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"OpenCost response {name} is not valid JSON ({exc})", file=name) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise SourceError(f"OpenCost response {name} has no 'data' list", file=name)
    code = doc.get("code", 200)
    if code != 200:
        raise SourceError(f"OpenCost response {name} has code {code}: {str(doc.get('message', ''))[:200]}", file=name)
    if not all(isinstance(s, dict) or s is None for s in doc["data"]):
        raise SourceError(f"OpenCost response {name}: 'data' must be a list of allocation sets", file=name)
    return doc


def tag_key(k: str) -> str:
    """OpenCost already sanitises label keys (`app.kubernetes.io/name` -> `app_kubernetes_io_name`); lower-case them."""
    return LABEL_KEY.sub("_", str(k).strip().lower())


def col_name(col: str) -> str:
    head, *rest = col.split("_")
    return head + "".join(p.capitalize() for p in rest)


def instance_id(provider_id: str | None) -> str | None:
    """'aws:///us-east-1a/i-0abc' -> 'i-0abc'; 'gce://proj/zone/name' -> 'name'; else as is."""
    if not provider_id:
        return None
    return provider_id.rstrip("/").rsplit("/", 1)[-1]


STAGE_SCHEMA = pa.schema([
    ("_file", pa.string()), ("_row", pa.int64()), ("name", pa.string()),
    ("window_start", pa.timestamp("us", tz="UTC")), ("window_end", pa.timestamp("us", tz="UTC")),
    ("is_idle", pa.bool_()), ("cluster", pa.string()), ("node", pa.string()), ("provider_id", pa.string()),
    ("namespace", pa.string()), ("pod", pa.string()), ("controller", pa.string()), ("tags", pa.string()),
    ("gpu_hours", pa.decimal128(38, 12)), ("gpu_cost", pa.decimal128(38, 12)),
    ("gpu_cost_adjustment", pa.decimal128(38, 12)), ("gpu_count", pa.decimal128(38, 12)),
    ("gpu_efficiency", pa.decimal128(38, 12)), ("gpu_usage_average", pa.decimal128(38, 12)),
    ("gpu_request_average", pa.decimal128(38, 12)), ("gpu_model", pa.string()), ("gpu_util", pa.decimal128(9, 6)),
    ("instance_type", pa.string()), ("problem", pa.string()),
])
