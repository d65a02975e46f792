"""GPU utilisation samples: DCGM exporter metrics and `nvidia-smi --query-gpu` CSV.

`uri` is a folder (local, file:// or s3://) of sample files:

* Prometheus text exposition (`*.prom`, `*.txt`, `*.metrics`): scrapes of dcgm-exporter's `/metrics`,
  `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (0..1) and/or `DCGM_FI_DEV_GPU_UTIL` (0..100 %) with the `gpu`, `UUID`,
  `modelName`, `Hostname` labels and, on Kubernetes, `namespace`/`pod`/`container` (Slurm: `hpc_job`).
  Samples carry their own timestamp (ms) or the file name does (`...20261014T101500Z...`).
* A Prometheus HTTP API export (`*.json`): the body of `/api/v1/query_range` (matrix) or `/api/v1/query`
  (vector) for those metrics.
* `nvidia-smi --query-gpu=timestamp,index,uuid,name,utilization.gpu,... --format=csv` (`*.csv`), with the
  header nvidia-smi writes (`utilization.gpu [%]`) or header-less (`nvidia_smi_columns` option); the host is
  the `hostname` option or the file name (`<host>.csv`); timestamps are host-local (`timezone` option).

Per GPU series (host, GPU, pod/job) the preferred metric is GR_ENGINE_ACTIVE, else GPU_UTIL, else
nvidia-smi. Each sample stands for the time to the next one (capped at twice the series' median interval;
the last one counts one median interval, a lone sample `scrape_interval_seconds`). Per UTC day and
series this gives observed GPU-hours and their time-weighted utilisation: usage rows with
`x_UsageType = 'gpu-observed'` and ConsumedUnit `GPU-Hours (observed)`, which never add to allocated
GPU-hours; the unit economics join them to jobs and pods on (cluster, job/pod, day) to compute waste.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from apportion.connectors.base import Delivery, DeliveryPlan, SourceError
from apportion.connectors.gpu_files import GpuFileConnector, LocalTimeGpuOptions, gunzipped
from apportion.models.gpu_rates import normalize_gpu_model

PROF = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
DEV = "DCGM_FI_DEV_GPU_UTIL"
METRIC_RANK = {PROF: 1, DEV: 2, "nvidia-smi": 3}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
STAMP = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})Z")
# labels that describe the device or the scrape, not who used the GPU
TECHNICAL = {"__name__", "gpu", "uuid", "device", "modelname", "hostname", "dcgm_fi_driver_version", "pci_bus_id",
             "instance", "job", "err_code", "err_msg", "gpu_i_id", "gpu_i_profile", "endpoint", "service",
             "prometheus", "container", "pod", "namespace", "hpc_job", "dcgm_fi_dev_name", "dcgm_fi_dev_uuid"}
DATA_SUFFIXES = (".prom", ".txt", ".metrics", ".json", ".csv", ".gz")
SMI_DEFAULT = ("timestamp", "index", "uuid", "name", "utilization.gpu")


class GpuMetricsOptions(LocalTimeGpuOptions):
    hostname: str | None = Field(None, description="Host of nvidia-smi files (default: the file name).")
    nvidia_smi_columns: list[str] | None = Field(None, description="Query fields of header-less nvidia-smi CSV.")
    scrape_interval_seconds: float = Field(30, gt=0, description="What a lone sample stands for.")


class GpuMetricsConnector(GpuFileConnector):
    kind = "gpu_metrics"
    line_items_sql = "gpu_metrics.sql"
    options_model = GpuMetricsOptions
    data_suffixes = DATA_SUFFIXES
    opts: GpuMetricsOptions

    # ---------------------------------------------------------------- discovery
    def _samples_of(self, obj) -> list[dict]:
        return self._parsed_of(obj)

    @staticmethod
    def _months(samples: list[dict]) -> set[str]:
        return {s["ts"].strftime("%Y-%m") for s in samples if s.get("ts") is not None}

    def months(self) -> list[str]:
        out: set[str] = set()
        for o in self._files():
            out |= self._months(self._samples_of(o))
        return sorted(out)

    def plan(self, month: str) -> DeliveryPlan:
        chosen = [o for o in self._files() if month in self._months(self._samples_of(o))]
        if not chosen:
            raise SourceError(f"no GPU metric file under {self.source.uri} has samples in {month}")
        return self.delivery_of(month, chosen, "gpu-metrics", "gpu-metrics")

    # ---------------------------------------------------------------- parsing
    def parse_bytes(self, key: str, data: bytes) -> list[dict]:
        data = gunzipped(key, data)
        text = data.decode("utf-8-sig", errors="replace")
        name = key.lower().removesuffix(".gz")
        if name.endswith(".json"):
            return self._parse_prom_json(key, text)
        if name.endswith(".csv"):
            return self._parse_smi(key, text)
        return self._parse_exposition(key, text)

    def _sample(self, key: str, row: int, metric: str, labels: dict[str, str], value: str, ts: datetime | None) -> dict:
        low = {k.lower(): v for k, v in labels.items()}
        s: dict[str, Any] = {
            "_file": key, "_row": row, "ts": ts, "metric_rank": METRIC_RANK[metric],
            "host": low.get("hostname") or low.get("instance") or None,
            "gpu": low.get("gpu"), "uuid": low.get("uuid"), "gpu_model": normalize_gpu_model(low.get("modelname")),
            "namespace": low.get("namespace") or None, "pod": low.get("pod") or None,
            "container": low.get("container") or None, "hpc_job": low.get("hpc_job") or None,
            "tags": None, "util": None, "problem": None,
        }
        extra = {k.lower(): v for k, v in labels.items() if k.lower() not in TECHNICAL and v != ""}
        if s["namespace"]:
            extra["namespace"] = s["namespace"]
        if s["hpc_job"]:
            extra["hpc_job"] = s["hpc_job"]
        s["tags"] = json.dumps(dict(sorted(extra.items()))) if extra else None
        problems = []
        if ts is None:
            problems.append(f"{metric}: no timestamp (neither on the sample nor in the file name)")
        try:
            v = Decimal(value.strip().rstrip("%").strip())
            if not v.is_finite():
                raise InvalidOperation
            util = v if metric == PROF else v / 100
            if util < 0 or util > 1:
                problems.append(f"{metric} value {value.strip()} out of range")
            else:
                s["util"] = util.quantize(Decimal("0.000001"))
        except (InvalidOperation, ValueError):
            problems.append(f"{metric}: non-numeric value {value.strip()!r}")
        if problems:
            s["problem"] = f"{s['host'] or '?'} GPU {s['uuid'] or s['gpu'] or '?'}: " + "; ".join(problems)
        return s

    def _parse_exposition(self, key: str, text: str) -> list[dict]:
        stamp = file_timestamp(key)
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if not m:
                if line.startswith((PROF, DEV)):
                    out.append({**self._sample(key, n, PROF if line.startswith(PROF) else DEV, {}, "x", stamp),
                                "problem": f"unparseable sample line {line[:120]!r}"})
                continue
            name, labels_text, value, ts_ms = m.groups()
            if name not in (PROF, DEV):
                continue
            labels = dict(LABEL.findall(labels_text or ""))
            ts = datetime.fromtimestamp(int(ts_ms) / 1000, tz=timezone.utc) if ts_ms else stamp
            out.append(self._sample(key, n, name, {k: unescape(v) for k, v in labels.items()}, value, ts))
        return out

    def _parse_prom_json(self, key: str, text: str) -> list[dict]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"cannot read {key}: not valid JSON ({exc})", file=key) from None
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise SourceError(f"{key}: not a Prometheus API response (no data.result)", file=key)
        if doc.get("status", "success") != "success":
            raise SourceError(f"{key}: Prometheus query status {doc.get('status')}: {doc.get('error', '')}", file=key)
        out, n = [], 0
        for series in data["result"]:
            labels = series.get("metric") or {}
            name = labels.get("__name__")
            if name not in (PROF, DEV):
                continue
            points = series.get("values") or ([series["value"]] if series.get("value") else [])
            for ts, value in points:
                n += 1
                try:
                    when = datetime.fromtimestamp(float(ts), tz=timezone.utc)
                except (TypeError, ValueError, OverflowError):
                    when = None
                out.append(self._sample(key, n, name, labels, str(value), when))
        return out

    def _parse_smi(self, key: str, text: str) -> list[dict]:
        rows = [r for r in csv.reader(io.StringIO(text), skipinitialspace=True) if r and any(c.strip() for c in r)]
        if not rows:
            return []
        head = [c.strip().lower() for c in rows[0]]
        if "timestamp" in head or any(c.startswith("utilization.gpu") for c in head):
            fields = [re.sub(r"\s*\[.*\]$", "", c) for c in head]
            body = list(enumerate(rows[1:], start=2))
        else:
            fields = [c.lower() for c in (self.opts.nvidia_smi_columns or SMI_DEFAULT)]
            body = list(enumerate(rows, start=1))
        if "utilization.gpu" not in fields or "timestamp" not in fields:
            raise SourceError(f"{key}: nvidia-smi CSV needs timestamp and utilization.gpu columns "
                              f"(header or the nvidia_smi_columns option), found {fields}", file=key)
        host = self.opts.hostname or Path(key).name.split(".")[0]
        out = []
        for n, values in body:
            rec = dict(zip(fields, (v.strip() for v in values)))
            ts = None
            try:
                ts = datetime.strptime(rec.get("timestamp", ""), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=self.tz)
                ts = ts.astimezone(timezone.utc)
            except ValueError:
                pass
            labels = {"Hostname": host, "gpu": rec.get("index", ""), "UUID": rec.get("uuid", ""),
                      "modelName": rec.get("name", "")}
            s = self._sample(key, n, "nvidia-smi", labels, rec.get("utilization.gpu", ""), ts)
            if len(values) != len(fields):
                s["problem"] = f"{host}: expected {len(fields)} columns, found {len(values)}"
            elif ts is None and not s["problem"]:
                s["problem"] = f"{host}: unparseable nvidia-smi timestamp {rec.get('timestamp')!r}"
            out.append(s)
        return out

    # ---------------------------------------------------------------- staging
    def stage_sql(self, con, delivery: Delivery) -> str:
        rows: list[dict] = []
        for key, path in delivery.files:
            rows.extend(self.parse_bytes(key, Path(path).read_bytes()))
        return self.stage_rows(con, "stg_gpu_metrics", rows, STAGE_SCHEMA)

    def file_select(self, con, key: str, path: Path, file_idx: int) -> str:
        self.parse_bytes(key, Path(path).read_bytes())
        return "SELECT 1"


STAGE_SCHEMA = pa.schema([
    ("_file", pa.string()), ("_row", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("metric_rank", pa.int32()),
    ("host", pa.string()), ("gpu", pa.string()), ("uuid", pa.string()), ("gpu_model", pa.string()),
    ("namespace", pa.string()), ("pod", pa.string()), ("container", pa.string()), ("hpc_job", pa.string()),
    ("tags", pa.string()), ("util", pa.decimal128(9, 6)), ("problem", pa.string()),
])


def file_timestamp(key: str) -> datetime | None:
    m = STAMP.search(Path(key).name)
    if not m:
        return None
    return datetime(*map(int, m.groups()), tzinfo=timezone.utc)


def unescape(v: str) -> str:
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
