"""Slurm accounting (`sacct`) output: GPU-hours per job, split by day, priced from a rate card.

`uri` is a folder (local, file:// or s3://) of sacct dumps, typically one per night:

* `sacct -a -X -P --format=JobIDRaw,JobID,JobName,User,Account,Partition,QOS,State,Submit,Start,End,ElapsedRaw,AllocTRES,NodeList,Cluster`
  (`|`-delimited, with or without the header line; `--parsable`'s trailing `|` is accepted;
  without `-X` the step rows `.batch`, `.extern`, `.0` are recognised and not counted again);
* `sacct --json` (Slurm 21.08+; 23.11+ wraps numbers as `{"set", "infinite", "number"}`).

Real-world quirks handled here: `AllocTRES` lists GPUs typed and untyped
(`gres/gpu:a100=2,gres/gpu=2`: counted once, the type is the GPU model), `State` like
`CANCELLED by 123`, `Start`/`End` `None`/`Unknown`, `Elapsed` like `1-14:17:59`, timestamps in
cluster-local time without offset (option `timezone`), the same job in several dumps (the union
of its intervals counts once). A job spanning midnight or a month end is split by UTC day.

Parsing happens here (Python, row by row, so every problem names its file, row and job id);
`sql/line_items/slurm_sacct.sql` splits by day, prices, adds the idle line and maps to FOCUS.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
from pydantic import Field, field_validator

from apportion.connectors.base import Delivery, DeliveryPlan, SourceError
from apportion.connectors.gpu_files import GpuFileConnector, LocalTimeGpuOptions, gunzipped
from apportion.models.gpu_rates import (
    normalize_gpu_model,
)

# The field list we recommend (README); used for files without a header line.
DEFAULT_COLUMNS = ("JobIDRaw", "JobID", "JobName", "User", "Account", "Partition", "QOS", "State", "Submit",
                   "Start", "End", "ElapsedRaw", "AllocTRES", "NodeList", "Cluster")
# sacct field name (lower case) -> our staging name
FIELDS = {
    "jobidraw": "job_id_raw", "jobid": "job_id", "jobname": "job_name", "user": "user", "account": "account",
    "partition": "partition", "qos": "qos", "state": "state", "submit": "submit", "start": "start", "end": "end",
    "elapsedraw": "elapsed_raw", "elapsed": "elapsed", "alloctres": "alloc_tres", "allocgres": "alloc_gres",
    "nodelist": "nodes", "cluster": "cluster", "wckey": "wckey", "tresusageintot": "tres_usage",
}
MISSING = {"", "none", "unknown", "n/a", "invalid"}
ELAPSED = re.compile(r"^(?:(\d+)-)?(?:(\d{1,2}):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
TRES_ITEM = re.compile(r"^([a-z][a-z0-9_]*(?:/[a-z0-9_.\-]+)?(?::[A-Za-z0-9_.\-]+)?)=(\d+(?:\.\d+)?)([KMGTP])?$")
STEP_ID = re.compile(r"^(.+?)\.([A-Za-z0-9_+\-]+)$")
DATA_SUFFIXES = (".txt", ".psv", ".log", ".out", ".sacct", ".csv", ".json", ".gz", ".dat")


class SlurmOptions(LocalTimeGpuOptions):
    format: str = Field("auto", description="auto | parsable | json")
    columns: list[str] | None = Field(None, description="Field names of header-less -P files (default: the recommended list).")
    delimiter: str = Field("|", min_length=1, max_length=1,
                           description="Field separator of -p/-P dumps: '|' by default, or what `sacct --delimiter` set.")
    partition_gpu_models: dict[str, str] = Field(default_factory=dict,
                                                 description="partition glob -> GPU model, for untyped gres/gpu.")
    default_gpu_model: str | None = None
    max_job_hours: float = Field(24 * 60, gt=0, description="Longer elapsed times are quarantined as absurd.")

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in ("auto", "parsable", "json"):
            raise ValueError("format must be auto, parsable or json")
        return v


@dataclass
class JobRecord:
    """One allocation row (or step row) of sacct output, parsed."""

    file: str
    row: int
    cluster: str | None = None
    job_id: str | None = None
    job_id_raw: str | None = None
    job_name: str | None = None
    user: str | None = None
    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    wckey: str | None = None
    state: str | None = None
    nodes: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    submit: datetime | None = None
    elapsed_s: float | None = None
    gpus: list[tuple[str | None, int]] = field(default_factory=list)
    gpu_util: Decimal | None = None
    problem: str | None = None
    is_step: bool = False

    @property
    def key(self) -> str:
        return self.job_id_raw or self.job_id or ""

    @property
    def base_id(self) -> str:
        m = STEP_ID.match(self.key)
        return m.group(1) if m and self.is_step else self.key

    def month_hint(self) -> str | None:
        for t in (self.start, self.end, self.submit):
            if t is not None:
                return t.strftime("%Y-%m")
        return None


class SlurmSacctConnector(GpuFileConnector):
    kind = "slurm_sacct"
    line_items_sql = "slurm_sacct.sql"
    options_model = SlurmOptions
    data_suffixes = DATA_SUFFIXES
    opts: SlurmOptions

    # ---------------------------------------------------------------- discovery
    def _records_of(self, obj) -> list[JobRecord]:
        return self._parsed_of(obj)

    def _months_of(self, records: list[JobRecord]) -> set[str]:
        found: set[str] = set()
        for r in records:
            if r.problem is None and r.start is not None and r.end is not None and r.gpus:
                t = datetime(r.start.year, r.start.month, 1, tzinfo=timezone.utc)
                while t < r.end:
                    found.add(t.strftime("%Y-%m"))
                    t = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=timezone.utc)
            elif r.problem is not None and r.month_hint():
                found.add(r.month_hint())  # type: ignore[arg-type]
        return found

    def months(self) -> list[str]:
        found: set[str] = set()
        for o in self._files():
            found |= self._months_of(self._records_of(o))
        return sorted(found)

    def plan(self, month: str) -> DeliveryPlan:
        chosen = []
        for o in self._files():
            recs = self._records_of(o)
            months = self._months_of(recs)
            if month in months or (not months and any(r.problem for r in recs)):
                chosen.append(o)
        if not chosen:
            raise SourceError(f"no sacct file under {self.source.uri} has GPU jobs in {month}")
        return self.delivery_of(month, chosen, "sacct", "slurm-sacct")

    # ---------------------------------------------------------------- parsing
    def parse_bytes(self, key: str, data: bytes) -> list[JobRecord]:
        data = gunzipped(key, data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        fmt = self.opts.format
        if fmt == "auto":
            fmt = "json" if text.lstrip().startswith("{") else "parsable"
        if fmt == "json":
            return self._parse_json(key, text)
        return self._parse_parsable(key, text)

    def _parse_parsable(self, key: str, text: str) -> list[JobRecord]:
        lines = text.splitlines()
        rows = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
        if not rows:
            return []
        sep = self.opts.delimiter
        first = [c.strip() for c in rows[0][1].split(sep)]
        lowered = {c.lower() for c in first}
        if {"jobid", "jobidraw"} & lowered:
            header = first
            rows = rows[1:]
        else:
            header = list(self.opts.columns or DEFAULT_COLUMNS)
        if header and header[-1] == "":  # --parsable: trailing delimiter
            header = header[:-1]
        names = [FIELDS.get(h.lower()) for h in header]
        if not ({"job_id", "job_id_raw"} & set(names)):
            raise SourceError(f"{key}: no JobID or JobIDRaw column in {header}", file=key)
        n = len(header)
        out = []
        for data_row, (_, line) in enumerate(rows, start=1):
            values = line.split(sep)
            if len(values) == n + 1 and values[-1] == "":
                values = values[:-1]
            rec = JobRecord(file=key, row=data_row)
            if len(values) != n:
                rec.job_id = values[0].strip() if values else None
                rec.problem = f"job {rec.job_id or '?'}: expected {n} {sep!r}-separated fields, found {len(values)}"
                out.append(rec)
                continue
            raw = {name: v.strip() for name, v in zip(names, values) if name}
            self._fill_from_parsable(rec, raw)
            out.append(rec)
        return self._finish(out)

    def _fill_from_parsable(self, rec: JobRecord, raw: dict[str, str]) -> None:
        rec.job_id = raw.get("job_id") or raw.get("job_id_raw") or None
        rec.job_id_raw = raw.get("job_id_raw") or None
        rec.is_step = "." in rec.key
        rec.job_name = raw.get("job_name") or None
        rec.user = raw.get("user") or None
        rec.account = raw.get("account") or None
        rec.partition = raw.get("partition") or None
        rec.qos = raw.get("qos") or None
        rec.wckey = raw.get("wckey") or None
        rec.state = raw.get("state") or None
        rec.nodes = raw.get("nodes") if (raw.get("nodes") or "").lower() not in MISSING | {"none assigned"} else None
        rec.cluster = raw.get("cluster") or self.opts.cluster or None
        problems = []
        if not rec.key:
            problems.append("missing JobID")
        for name in ("start", "end", "submit"):
            value = raw.get(name)
            try:
                setattr(rec, name, self._local_time(value))
            except ValueError:
                problems.append(f"unparseable {name.capitalize()} {value!r}")
        elapsed_text = raw.get("elapsed_raw") if raw.get("elapsed_raw") not in (None, "") else raw.get("elapsed")
        try:
            rec.elapsed_s = parse_elapsed(elapsed_text)
        except ValueError:
            problems.append(f"unparseable Elapsed {elapsed_text!r}")
        tres = raw.get("alloc_tres")
        try:
            if tres is not None and tres != "":
                rec.gpus = parse_alloc_tres(tres)
            elif raw.get("alloc_gres"):
                rec.gpus = parse_alloc_gres(raw["alloc_gres"])
        except ValueError as exc:
            problems.append(str(exc))
        usage = raw.get("tres_usage")
        if usage:
            rec.gpu_util = parse_gpu_util(usage)
        if problems:
            rec.problem = f"job {rec.key or '?'}: " + "; ".join(problems)

    def _parse_json(self, key: str, text: str) -> list[JobRecord]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"cannot read {key}: not valid JSON ({exc})", file=key) from None
        jobs = doc.get("jobs") if isinstance(doc, dict) else None
        if not isinstance(jobs, list):
            raise SourceError(f"{key}: no 'jobs' list: not sacct --json output?", file=key)
        out = []
        for i, job in enumerate(jobs, start=1):
            rec = JobRecord(file=key, row=i)
            if not isinstance(job, dict):
                rec.problem = "job ?: entry is not a JSON object"
                out.append(rec)
                continue
            try:
                self._fill_from_json(rec, job)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                rec.problem = f"job {rec.key or '?'}: malformed sacct JSON entry ({exc})"
            out.append(rec)
        return self._finish(out)

    def _fill_from_json(self, rec: JobRecord, job: dict) -> None:
        assoc = job.get("association") or {}
        job_id = unwrap(job.get("job_id"))
        rec.job_id_raw = str(job_id) if job_id is not None else None
        array = job.get("array") or {}
        array_job = unwrap(array.get("job_id"))
        task = unwrap(array.get("task_id"))
        if array_job and task is not None:
            rec.job_id = f"{array_job}_{task}"
        else:
            het = job.get("het") or {}
            het_job, het_off = unwrap(het.get("job_id")), unwrap(het.get("job_offset"))
            rec.job_id = f"{het_job}+{het_off}" if het_job and het_off is not None else rec.job_id_raw
        rec.job_name = job.get("name") or None
        rec.user = job.get("user") or assoc.get("user") or None
        rec.account = job.get("account") or assoc.get("account") or None
        rec.partition = job.get("partition") or assoc.get("partition") or None
        rec.qos = job.get("qos") if isinstance(job.get("qos"), str) else None
        wckey = job.get("wckey")
        rec.wckey = (wckey.get("wckey") if isinstance(wckey, dict) else wckey) or None
        state = job.get("state")
        if isinstance(state, dict):
            current = state.get("current")
            rec.state = ",".join(current) if isinstance(current, list) else current
        else:
            rec.state = state
        nodes = job.get("nodes")
        rec.nodes = nodes if nodes and str(nodes).lower() not in MISSING | {"none assigned"} else None
        rec.cluster = job.get("cluster") or assoc.get("cluster") or self.opts.cluster or None
        t = job.get("time") or {}
        problems = []
        for name, src in (("start", "start"), ("end", "end"), ("submit", "submission")):
            v = unwrap(t.get(src))
            if v in (None, 0):
                continue
            try:
                setattr(rec, name, datetime.fromtimestamp(int(v), tz=timezone.utc))
            except (TypeError, ValueError, OverflowError):
                problems.append(f"unparseable time.{src} {v!r}")
        el = unwrap(t.get("elapsed"))
        if el is not None:
            try:
                rec.elapsed_s = float(el)
            except (TypeError, ValueError):
                problems.append(f"unparseable time.elapsed {el!r}")
        tres = (job.get("tres") or {}).get("allocated") or []
        items = []
        for item in tres:
            typ, name, count = item.get("type"), item.get("name") or "", unwrap(item.get("count"))
            items.append(f"{typ}{'/' + name if name else ''}={count}")
        if items:
            try:
                rec.gpus = parse_alloc_tres(",".join(items))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            rec.problem = f"job {rec.key or '?'}: " + "; ".join(problems)

    def _local_time(self, value: str | None) -> datetime | None:
        if value is None or value.strip().lower() in MISSING:
            return None
        v = value.strip()
        if re.fullmatch(r"-?\d+", v):
            raise ValueError(v)
        dt = datetime.fromisoformat(v.replace(" ", "T", 1) if "T" not in v else v)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return dt.astimezone(timezone.utc)

    def _finish(self, records: list[JobRecord]) -> list[JobRecord]:
        """Derive the interval, validate it, and attach step utilisation to allocations."""
        max_s = self.opts.max_job_hours * 3600
        for r in records:
            if r.problem:
                continue
            if r.start is not None and r.end is None and r.elapsed_s is not None and r.elapsed_s > 0:
                r.end = r.start + timedelta(seconds=r.elapsed_s)  # still running: End Unknown
            if r.elapsed_s is not None and r.elapsed_s < 0:
                r.problem = f"job {r.key}: negative elapsed time {r.elapsed_s:g} s"
            elif r.start is not None and r.end is not None and r.end < r.start:
                r.problem = f"job {r.key}: negative elapsed time (End {r.end.isoformat()} before Start {r.start.isoformat()})"
            elif r.start is not None and r.end is not None and (r.end - r.start).total_seconds() > max_s:
                hours = (r.end - r.start).total_seconds() / 3600
                r.problem = (f"job {r.key}: absurd elapsed time {hours:.1f} h "
                             f"(more than max_job_hours={self.opts.max_job_hours:g})")
            elif r.start is None and r.gpus and (r.elapsed_s or 0) > 0:
                r.problem = f"job {r.key}: has GPUs and {r.elapsed_s:g} s elapsed but no Start"
            elif r.start is not None and r.end is None and r.gpus and not r.is_step:
                r.problem = f"job {r.key}: started {r.start.isoformat()} with neither End nor Elapsed"
        # utilisation measured on steps (TRESUsageInTot gres/gpuutil) goes to the allocation
        best: dict[str, tuple[float, Decimal]] = {}
        for r in records:
            if r.is_step and r.gpu_util is not None:
                dur = (r.end - r.start).total_seconds() if r.start and r.end else (r.elapsed_s or 0)
                if r.base_id not in best or dur > best[r.base_id][0]:
                    best[r.base_id] = (dur, r.gpu_util)
        for r in records:
            if not r.is_step and r.gpu_util is None and r.key in best:
                r.gpu_util = best[r.key][1]
        return records

    # ---------------------------------------------------------------- staging
    def model_for(self, rec: JobRecord, typed: str | None) -> str | None:
        if typed:
            return normalize_gpu_model(typed)
        for pattern, model in self.opts.partition_gpu_models.items():
            if rec.partition and fnmatchcase(rec.partition.lower(), pattern.lower()):
                return normalize_gpu_model(model)
        return normalize_gpu_model(self.opts.default_gpu_model)

    def staged_rows(self, records: Iterable[JobRecord]) -> list[dict[str, Any]]:
        """Allocations only (steps are not counted again), GPU jobs only, one row per (job interval, GPU model)."""
        records = list(records)
        allocations = {(r.cluster, r.key) for r in records if not r.is_step and r.key}
        chosen: list[JobRecord] = []
        for r in records:
            if r.problem:
                chosen.append(r)
            elif r.is_step:
                if (r.cluster, r.base_id) not in allocations and r.gpus and r.start is not None:
                    r.problem = f"job {r.key}: step row without its allocation row (is the file cut?)"
                    chosen.append(r)
            elif r.gpus and r.start is not None and r.end is not None and r.end > r.start:
                chosen.append(r)
        # the same job in several dumps: union of its intervals, attributes of the latest record
        by_job: dict[tuple, list[JobRecord]] = {}
        out_records: list[JobRecord] = []
        for r in chosen:
            if r.problem:
                out_records.append(r)
            else:
                by_job.setdefault((r.cluster, r.key), []).append(r)
        for recs in by_job.values():
            recs.sort(key=lambda r: (r.start, r.end))
            island: list[JobRecord] = []
            for r in recs:
                if island and r.start <= max(x.end for x in island):  # type: ignore[operator]
                    island.append(r)
                else:
                    if island:
                        out_records.append(_merge(island))
                    island = [r]
            out_records.append(_merge(island))
        rows = []
        for r in sorted(out_records, key=lambda r: (r.file, r.row)):
            gpus = r.gpus or [(None, 0)]
            for part, (typed, count) in enumerate(gpus, start=1):
                rows.append({
                    "_file": r.file, "_row": r.row, "_part": part, "cluster": r.cluster or "default",
                    "job_id": r.job_id or r.key or None, "job_id_raw": r.job_id_raw, "job_name": r.job_name,
                    "user_name": r.user, "account": r.account, "partition": r.partition, "qos": r.qos,
                    "wckey": r.wckey, "state": r.state, "nodes": r.nodes,
                    "start_utc": r.start if not r.problem else None, "end_utc": r.end if not r.problem else None,
                    "gpu_model": self.model_for(r, typed) if not r.problem else normalize_gpu_model(typed),
                    "gpu_count": count, "gpu_util": r.gpu_util, "problem": r.problem, "month_hint": r.month_hint(),
                })
        return rows

    def stage_sql(self, con, delivery: Delivery) -> str:
        records: list[JobRecord] = []
        for key, path in delivery.files:
            records.extend(self.parse_bytes(key, Path(path).read_bytes()))
        return self.stage_rows(con, "stg_slurm_sacct", self.staged_rows(records), STAGE_SCHEMA)

    # used by ledger._locate_bad_file when the combined read fails
    def file_select(self, con, key: str, path: Path, file_idx: int) -> str:
        self.parse_bytes(key, Path(path).read_bytes())
        return "SELECT 1"


STAGE_SCHEMA = pa.schema([
    ("_file", pa.string()), ("_row", pa.int64()), ("_part", pa.int32()), ("cluster", pa.string()),
    ("job_id", pa.string()), ("job_id_raw", pa.string()), ("job_name", pa.string()), ("user_name", pa.string()),
    ("account", pa.string()), ("partition", pa.string()), ("qos", pa.string()), ("wckey", pa.string()),
    ("state", pa.string()), ("nodes", pa.string()), ("start_utc", pa.timestamp("us", tz="UTC")),
    ("end_utc", pa.timestamp("us", tz="UTC")), ("gpu_model", pa.string()), ("gpu_count", pa.int64()),
    ("gpu_util", pa.decimal128(9, 6)), ("problem", pa.string()), ("month_hint", pa.string()),
])


def _merge(island: list[JobRecord]) -> JobRecord:
    latest = max(island, key=lambda r: (r.end, r.file, r.row))
    if len(island) == 1:
        return latest
    merged = JobRecord(**{**latest.__dict__})
    merged.start = min(r.start for r in island)  # type: ignore[type-var]
    merged.end = max(r.end for r in island)  # type: ignore[type-var]
    return merged


# ------------------------------------------------------------------ field parsers
def unwrap(v: Any) -> Any:
    """Slurm 23.11+ JSON numbers: {"set": true, "infinite": false, "number": N} -> N (None when unset/infinite)."""
    if isinstance(v, dict) and "number" in v:
        if not v.get("set", True) or v.get("infinite", False):
            return None
        return v["number"]
    return v


def parse_elapsed(text: str | None) -> float | None:
    """'1-14:17:59' -> 137879; '05:03' -> 303 (MM:SS); ElapsedRaw '3600' -> 3600. Missing -> None."""
    if text is None:
        return None
    t = text.strip()
    if t.lower() in MISSING - {"invalid"}:
        return None
    if re.fullmatch(r"-?\d+", t):
        return float(int(t))
    m = ELAPSED.match(t)
    if not m:
        raise ValueError(t)
    days, hours, minutes, seconds = m.groups()
    if hours is None:  # MM:SS(.mmm)
        hours = "0"
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_alloc_tres(text: str) -> list[tuple[str | None, int]]:
    """GPUs in an AllocTRES string: [(type or None, count)], counting typed+untyped entries once.

    `billing=16,cpu=16,gres/gpu:a100=2,gres/gpu=2,mem=32G,node=1` -> [('a100', 2)].
    Only untyped (`gres/gpu=4`) -> [(None, 4)]. No GPU -> []. Raises ValueError on bad syntax or
    typed entries that disagree with the untyped total.
    """
    typed: dict[str, int] = {}
    untyped: int | None = None
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        m = TRES_ITEM.match(item)
        if not m:
            raise ValueError(f"unparseable AllocTRES {text!r} (at {item!r})")
        name, value, suffix = m.groups()
        if name == "gres/gpu" or name.startswith("gres/gpu:"):
            if suffix or "." in value:
                raise ValueError(f"unparseable AllocTRES {text!r} (GPU count {value}{suffix or ''})")
            n = int(value)
            if name == "gres/gpu":
                untyped = n
            else:
                typed[name.split(":", 1)[1]] = typed.get(name.split(":", 1)[1], 0) + n
    typed = {k: v for k, v in typed.items() if v > 0}
    if typed:
        total = sum(typed.values())
        if untyped is not None and untyped != total:
            raise ValueError(f"AllocTRES {text!r} lists {untyped} GPUs but its typed entries sum to {total}")
        return sorted(typed.items())
    if untyped:
        return [(None, untyped)]
    return []


def parse_alloc_gres(text: str) -> list[tuple[str | None, int]]:
    """Old AllocGRES: 'gpu:a100:2' / 'gpu:2' (several comma-separated)."""
    out: list[tuple[str | None, int]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        parts = item.split("(")[0].split(":")
        if parts[0] != "gpu":
            continue
        try:
            count = int(parts[-1])
        except ValueError:
            raise ValueError(f"unparseable AllocGRES {text!r}") from None
        out.append((parts[1] if len(parts) == 3 else None, count))
    return [o for o in out if o[1] > 0]


def parse_gpu_util(text: str) -> Decimal | None:
    """`gres/gpuutil=90` in TRESUsageInTot (NVML plugin, percent) -> Decimal('0.9'), capped at 1."""
    m = re.search(r"(?:^|,)gres/gpuutil=(\d+(?:\.\d+)?)", text)
    if not m:
        return None
    return min(Decimal(m.group(1)) / 100, Decimal(1)).quantize(Decimal("0.000001"))
