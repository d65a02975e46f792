"""Deterministic demo data for the GPU sources: an on-premises Slurm cluster and a Kubernetes GPU cluster.

* `slurm_sacct`: a month (or two) of jobs on the on-premises cluster `hpc-onprem` (8 A100 nodes and 4 H100
  nodes, 8 GPUs each), one `sacct -a -X -P` dump per day in cluster-local time (America/Chicago), with the
  real-world quirks: `CANCELLED by <uid>`, pending jobs (`Start None`), `RUNNING` jobs with `End Unknown`,
  jobs crossing midnight and the month end. Jobs are scheduled onto GPU slots, so allocations never exceed
  the configured capacity and the rest is an idle line.
* `gpu_metrics`: the jobs' GPU utilisation as a Prometheus `query_range` export of dcgm-exporter's
  `DCGM_FI_PROF_GR_ENGINE_ACTIVE`, one series per GPU with the Slurm `hpc_job` label.
* `opencost`: recorded `/allocation` responses (one file per day, `aggregate=namespace,pod`,
  `idleByNode=true`) for the EKS cluster `ml-inference`, whose GPU nodes are the Karpenter-launched
  p5.48xlarge and g5.12xlarge instances of the demo CUR (account 222222222222). The node-hours are read from
  the generated CUR itself, so pods + idle GPU-hours of a node equal its instance-hours x GPUs.

Everything is a pure function of the seed, the months and "today" (like `apportion.demo`): same inputs,
same bytes. The folders come from the demo config (the `uri` of each GPU source).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

CLUSTER = "hpc-onprem"
CLUSTER_TZ = "America/Chicago"
EKS_CLUSTER = "ml-inference"
EKS_ACCOUNT = "222222222222"
NODE_GPUS = {"p5.48xlarge": 8, "g5.12xlarge": 4}
GPU_MODEL = {"p5.48xlarge": "NVIDIA H100 80GB HBM3", "g5.12xlarge": "NVIDIA A10G"}
# OpenCost's GPU price when only the instance price is known: on-demand price / GPUs (demo CUR prices)
GPU_HOUR_PRICE = {"p5.48xlarge": 12.29, "g5.12xlarge": 1.418}
PARTITIONS = {"gpu-a100": ("a100", [f"a100-{i:02d}" for i in range(1, 9)]),
              "gpu-h100": ("h100", [f"h100-{i:02d}" for i in range(1, 5)])}
ACCOUNTS = [  # slurm account (= team), wckey (= project), users, share of jobs, typical GR_ENGINE_ACTIVE
    ("research", "research-sandbox", ["ana", "bo", "chen"], 0.40, 0.82),
    ("ml-platform", "llm-serving", ["dev", "eli"], 0.35, 0.64),
    ("search", "recsys", ["fay", "gus"], 0.25, 0.31),
]
SACCT_HEADER = "JobIDRaw|JobID|JobName|User|Account|Partition|QOS|State|Submit|Start|End|ElapsedRaw|AllocTRES|NodeList|Cluster|WCKey"


def _rng(*parts: object) -> random.Random:
    return random.Random(int(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest(), 16))


def _month_start(month: str) -> datetime:
    return datetime(int(month[:4]), int(month[5:7]), 1, tzinfo=timezone.utc)


@dataclass
class Job:
    job_id: int
    name: str
    user: str
    account: str
    wckey: str
    partition: str
    gpus: int
    submit: datetime
    duration: timedelta
    state: str = "COMPLETED"
    start: datetime | None = None
    end: datetime | None = None
    node: str | None = None
    util: float = 0.0
    running: bool = False
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ Slurm
def slurm_jobs(months: list[str], today: date, seed: int = 7) -> list[Job]:
    """Jobs submitted from the first month's start until the end of `today` (UTC), scheduled on GPU slots."""
    start = _month_start(sorted(months)[0])
    cutoff = datetime(today.year, today.month, today.day, tzinfo=timezone.utc) + timedelta(days=1)
    rng = _rng("slurm", seed, start.date())
    slots = {node: [start] * 8 for part in PARTITIONS.values() for node in part[1]}
    jobs: list[Job] = []
    job_id = 410000
    day = start
    while day < cutoff:
        per_day = {"gpu-a100": rng.randint(24, 34), "gpu-h100": rng.randint(14, 22)}
        if day.weekday() >= 5:
            per_day = {k: v // 2 for k, v in per_day.items()}
        for partition, count in per_day.items():
            for _ in range(count):
                acct, wckey, users, _, util = rng.choices(ACCOUNTS, weights=[a[3] for a in ACCOUNTS])[0]
                job_id += 1
                hours = min(rng.lognormvariate(1.8, 0.9), 40.0)
                job = Job(job_id=job_id, name=rng.choice(["train", "finetune", "eval", "sweep", "embed", "preproc"]),
                          user=rng.choice(users), account=acct, wckey=wckey, partition=partition,
                          gpus=rng.choice([1, 2, 2, 4, 4, 8]),
                          submit=day + timedelta(seconds=rng.randrange(86400)),
                          duration=timedelta(seconds=int(hours * 3600) + rng.randrange(60)),
                          util=max(0.02, min(0.99, rng.gauss(util, 0.12))))
                jobs.append(job)
        day += timedelta(days=1)
    jobs.sort(key=lambda j: (j.submit, j.job_id))
    for job in jobs:
        outcome = rng.random()
        if outcome < 0.03:  # cancelled while pending: never started
            job.state = f"CANCELLED by {rng.randint(10000, 99999)}"
            continue
        nodes = PARTITIONS[job.partition][1]
        best = None
        for node in nodes:
            free = sorted(slots[node])
            begin = max(job.submit, free[job.gpus - 1])
            if best is None or begin < best[0]:
                best = (begin, node)
        begin, node = best  # type: ignore[misc]
        if begin >= cutoff:  # still pending at the dump
            job.state = "PENDING"
            continue
        if outcome < 0.08:
            job.state = f"CANCELLED by {rng.randint(10000, 99999)}"
            job.duration = job.duration * rng.uniform(0.1, 0.9)
        elif outcome < 0.12:
            job.state = "FAILED"
            job.duration = job.duration * rng.uniform(0.01, 0.5)
        elif outcome < 0.15:
            job.state = "TIMEOUT"
        job.duration = timedelta(seconds=max(60, int(job.duration.total_seconds())))
        job.start, job.node = begin, node
        job.end = begin + job.duration
        if job.end > cutoff:
            job.running, job.state = True, "RUNNING"
        free = sorted(slots[node])
        slots[node] = free[job.gpus:] + [job.end] * job.gpus
    return jobs


def _local(t: datetime | None) -> str:
    if t is None:
        return "None"
    return t.astimezone(ZoneInfo(CLUSTER_TZ)).replace(tzinfo=None).isoformat(timespec="seconds")


def write_sacct(folder: Path, jobs: list[Job], today: date) -> list[Path]:
    """One `sacct -a -X -P` dump per local day: the jobs that ended that day; today's also lists running/pending."""
    tz = ZoneInfo(CLUSTER_TZ)
    cutoff = datetime(today.year, today.month, today.day, tzinfo=timezone.utc) + timedelta(days=1)
    by_day: dict[date, list[str]] = {}
    for j in jobs:
        model = PARTITIONS[j.partition][0]
        tres = f"billing={8 * j.gpus},cpu={8 * j.gpus},gres/gpu:{model}={j.gpus},gres/gpu={j.gpus},mem={64 * j.gpus}G,node=1"
        if j.start is None:
            day = (cutoff - timedelta(seconds=1)).astimezone(tz).date()
            line = [str(j.job_id), str(j.job_id), j.name, j.user, j.account, j.partition, "normal", j.state,
                    _local(j.submit), "None", "Unknown", "0", f"billing={8 * j.gpus},cpu={8 * j.gpus},node=1",
                    "None assigned", CLUSTER, j.wckey]
        else:
            end = min(j.end, cutoff)  # type: ignore[type-var]
            elapsed = int((end - j.start).total_seconds())
            day = (end - timedelta(seconds=1)).astimezone(tz).date()
            line = [str(j.job_id), str(j.job_id), j.name, j.user, j.account, j.partition, "normal", j.state,
                    _local(j.submit), _local(j.start), "Unknown" if j.running else _local(j.end), str(elapsed),
                    tres, j.node or "None assigned", CLUSTER, j.wckey]
        by_day.setdefault(day, []).append("|".join(line))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("sacct-*.txt"):
        stale.unlink()
    out = []
    for day in sorted(by_day):
        path = folder / f"sacct-{day:%Y-%m-%d}.txt"
        path.write_text(SACCT_HEADER + "\n" + "\n".join(by_day[day]) + "\n")
        out.append(path)
    return out


def write_dcgm(folder: Path, jobs: list[Job], months: list[str], today: date, seed: int = 7) -> list[Path]:
    """GR_ENGINE_ACTIVE per GPU of every job, hourly (a Prometheus query_range export per month)."""
    cutoff = datetime(today.year, today.month, today.day, tzinfo=timezone.utc) + timedelta(days=1)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("dcgm-*.json"):
        stale.unlink()
    out = []
    for month in sorted(months):
        lo = _month_start(month)
        hi = datetime(lo.year + (lo.month == 12), lo.month % 12 + 1, 1, tzinfo=timezone.utc)
        result = []
        for j in jobs:
            if j.start is None:
                continue
            end = min(j.end, cutoff)  # type: ignore[type-var]
            rng = _rng("dcgm", seed, j.job_id)
            for gpu in range(j.gpus):
                values = []
                t = j.start
                while t < end:
                    if lo <= t < hi:
                        v = max(0.0, min(1.0, rng.gauss(j.util, 0.08)))
                        values.append([round(t.timestamp(), 3), f"{v:.4f}"])
                    t += timedelta(hours=1)
                if values:
                    model = PARTITIONS[j.partition][0]
                    result.append({"metric": {
                        "__name__": "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gpu": str(gpu),
                        "UUID": "GPU-" + hashlib.blake2b(f"{j.node}/{gpu}".encode(), digest_size=16).hexdigest(),
                        "device": f"nvidia{gpu}",
                        "modelName": "NVIDIA A100-SXM4-80GB" if model == "a100" else "NVIDIA H100 80GB HBM3",
                        "Hostname": j.node, "hpc_job": str(j.job_id), "instance": f"{j.node}:9400",
                        "job": "dcgm-exporter"}, "values": values})
        if result:
            path = folder / f"dcgm-{CLUSTER}-{month}.json"
            path.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}))
            out.append(path)
    return out


# ------------------------------------------------------------------ Kubernetes on the demo CUR's instances
def cur_gpu_nodes(cur_root: Path, months: list[str]) -> list[tuple[str, str, str, date, float]]:
    """(instance id, instance type, availability zone, day, instance-hours) of the EKS GPU nodes in the demo CUR."""
    files = [str(p) for m in months for p in (cur_root / "data" / f"BILLING_PERIOD={m}").glob("*.parquet")]
    if not files:
        return []
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            "SELECT line_item_resource_id, product_instance_type, any_value(line_item_availability_zone), "
            "CAST(line_item_usage_start_date AS DATE) AS day, sum(line_item_usage_amount) "
            "FROM read_parquet(?) WHERE line_item_usage_account_id = ? "
            "AND line_item_line_item_type IN ('Usage', 'SavingsPlanCoveredUsage', 'DiscountedUsage') "
            "AND line_item_usage_type LIKE '%BoxUsage%' AND product_instance_type IN ('p5.48xlarge', 'g5.12xlarge') "
            "AND CAST(resource_tags AS VARCHAR) ILIKE '%karpenter%' GROUP BY 1, 2, 4 ORDER BY 4, 1",
            [files, EKS_ACCOUNT],
        ).fetchall()
    finally:
        con.close()
    return [(r[0], r[1], r[2], r[3], float(r[4])) for r in rows]


def _r5(x: float) -> float:
    return round(x, 5)  # OpenCost rounds API numbers to 5 decimals


def _allocation(name: str, props: dict, day: date, minutes: float, gpu_hours: float, gpu_cost: float,
                gpu_count: float, gpu_alloc: dict | None, eff: float | None, cpu: float) -> dict:
    start = f"{day:%Y-%m-%d}T00:00:00Z"
    end = f"{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z"
    hours = minutes / 60
    cpu_cost, ram_cost = _r5(cpu * hours * 0.031611), _r5(4 * cpu * hours * 0.004237)
    return {
        "name": name, "properties": props, "window": {"start": start, "end": end}, "start": start, "end": end,
        "minutes": _r5(minutes), "cpuCores": cpu, "cpuCoreRequestAverage": cpu, "cpuCoreLimitAverage": 0,
        "cpuCoreUsageAverage": _r5(cpu * 0.35), "cpuCoreHours": _r5(cpu * hours), "cpuCost": cpu_cost,
        "cpuCostAdjustment": 0, "cpuCostIdle": 0, "cpuEfficiency": 0.35,
        "gpuCount": gpu_count, "gpuHours": _r5(gpu_hours), "gpuCost": _r5(gpu_cost), "gpuCostAdjustment": 0,
        "gpuCostIdle": 0, "gpuEfficiency": eff if eff is not None else 0,
        "networkTransferBytes": 0, "networkReceiveBytes": 0, "networkCost": 0, "networkCrossZoneCost": 0,
        "networkCrossRegionCost": 0, "networkInternetCost": 0, "networkCostAdjustment": 0, "loadBalancerCost": 0,
        "loadBalancerCostAdjustment": 0, "pvBytes": 0, "pvByteHours": 0, "pvCost": 0, "pvs": None,
        "pvCostAdjustment": 0, "ramBytes": 4 * cpu * 2**30, "ramByteRequestAverage": 4 * cpu * 2**30,
        "ramByteLimitAverage": 0, "ramByteUsageAverage": _r5(2.5 * cpu * 2**30),
        "ramByteHours": _r5(4 * cpu * 2**30 * hours), "ramCost": ram_cost, "ramCostAdjustment": 0, "ramCostIdle": 0,
        "ramEfficiency": 0.625, "externalCost": 0, "sharedCost": 0,
        "totalCost": _r5(cpu_cost + ram_cost + gpu_cost), "totalEfficiency": 0,
        "rawAllocationOnly": None, "lbAllocations": None, "gpuAllocation": gpu_alloc,
    }


# pods per node slot: (namespace, deployment, labels, GPUs, share of the node's uptime, efficiency)
NODE_PODS = {
    0: [("ml-serving", "llm-server", {"team": "ml-platform", "project": "llm-serving", "workload": "inference"}, 4, 1.0, 0.62),
        ("research", "train-llama", {"team": "research", "project": "research-sandbox", "workload": "training"}, 4, 0.6, 0.91)],
    1: [("ml-training", "finetune-ranker", {"team": "ml-platform", "project": "llm-serving", "workload": "training"}, 8, 0.75, 0.88)],
    2: [("ml-serving", "chatbot", {"team": "ml-platform", "project": "chatbot", "workload": "inference"}, 2, 1.0, 0.47),
        ("search", "ranker", {"team": "search", "project": "recsys", "workload": "inference"}, 2, 0.8, 0.23)],
    3: [("ml-serving", "chatbot-canary", {"team": "ml-platform", "project": "chatbot", "workload": "inference"}, 2, 1.0, 0.18)],
}


def write_opencost(folder: Path, nodes: list[tuple[str, str, str, date, float]], seed: int = 7) -> list[Path]:
    """One recorded /allocation response per day: the GPU pods on each node, a CPU pod, and each node's idle."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("allocation-*.json"):
        stale.unlink()
    order = sorted({(n[1] != "p5.48xlarge", n[0]) for n in nodes})
    slot = {iid: i for i, (_, iid) in enumerate(order)}
    by_day: dict[date, list] = {}
    for n in nodes:
        by_day.setdefault(n[3], []).append(n)
    out = []
    for day in sorted(by_day):
        allocations: dict[str, dict] = {}
        for iid, itype, az, _, hours in sorted(by_day[day]):
            s = slot[iid]
            node_name = f"ip-10-0-{s + 1}-{10 + s * 7}.ec2.internal"
            props_node = {"cluster": EKS_CLUSTER, "node": node_name, "providerID": f"aws:///{az}/{iid}"}
            gpus = NODE_GPUS[itype]
            rng = _rng("opencost", seed, iid, day)
            used = 0.0
            for ns, deploy, labels, n_gpu, share, eff in NODE_PODS.get(s % 4, []):
                pod = f"{deploy}-{hashlib.blake2b(f'{deploy}{s}{day:%Y%m}'.encode(), digest_size=3).hexdigest()}"
                frac = share if share >= 1 else min(1.0, max(0.1, rng.gauss(share, 0.15)))
                gh = _r5(n_gpu * hours * frac)
                used += gh
                e = round(min(0.99, max(0.02, rng.gauss(eff, 0.05))), 5)
                props = {**props_node, "namespace": ns, "pod": pod, "controller": deploy, "controllerKind": "deployment",
                         "container": "main", "labels": {**labels, "app": deploy,
                                                         "node_kubernetes_io_instance_type": itype},
                         "namespaceLabels": {"kubernetes_io_metadata_name": ns}}
                gpu_alloc = {"gpuDevice": "nvidia0", "gpuModel": GPU_MODEL[itype],
                             "gpuUUID": "GPU-" + hashlib.blake2b(f"{iid}{pod}".encode(), digest_size=8).hexdigest(),
                             "isGPUShared": False, "gpuUsageAverage": _r5(e * n_gpu), "gpuRequestAverage": n_gpu}
                allocations[f"{ns}/{pod}"] = _allocation(f"{ns}/{pod}", props, day, hours * frac * 60, gh,
                                                        gh * GPU_HOUR_PRICE[itype], n_gpu, gpu_alloc, e, 8.0)
            if s == 2:  # a CPU-only system pod: not GPU usage
                props = {**props_node, "namespace": "kube-system", "pod": "coredns-5d78c", "controller": "coredns",
                         "controllerKind": "deployment", "container": "coredns", "labels": {"k8s_app": "kube-dns"},
                         "namespaceLabels": {"kubernetes_io_metadata_name": "kube-system"}}
                allocations["kube-system/coredns-5d78c"] = _allocation("kube-system/coredns-5d78c", props, day,
                                                                       hours * 60, 0, 0, 0, None, None, 0.1)
            idle_hours = _r5(gpus * hours - used)
            name = f"{EKS_CLUSTER}/{node_name}/__idle__"
            allocations[name] = _allocation(name, props_node, day, hours * 60, idle_hours,
                                            idle_hours * GPU_HOUR_PRICE[itype], 0, None, None, 100.0)
        path = folder / f"allocation-{day:%Y-%m-%d}.json"
        path.write_text(json.dumps({"code": 200, "data": [dict(sorted(allocations.items()))]}, indent=1))
        out.append(path)
    return out


# ------------------------------------------------------------------ entry point
def generate_gpu_demo(cfg, months: list[str], today: date | None = None, seed: int = 7) -> list[str]:
    """Write the demo data of every GPU source of `cfg` (after the demo CUR); returns one summary line per source."""
    from apportion.demo.generators.aws_cur import _utc_today

    today = today or _utc_today()
    lines = []
    cur = next((Path(s.uri) for s in cfg.sources if s.kind == "aws_cur" and "://" not in s.uri), None)
    jobs: list[Job] | None = None
    for s in cfg.sources:
        if s.kind not in ("slurm_sacct", "gpu_metrics", "opencost") or "://" in s.uri:
            continue
        folder = Path(s.uri)
        if s.kind in ("slurm_sacct", "gpu_metrics") and jobs is None:
            jobs = slurm_jobs(months, today, seed)
        if s.kind == "slurm_sacct":
            files = write_sacct(folder, jobs or [], today)
            lines.append(f"demo Slurm sacct dumps ({CLUSTER}): {len(files)} files under {folder}")
        elif s.kind == "gpu_metrics":
            files = write_dcgm(folder, jobs or [], months, today, seed)
            lines.append(f"demo DCGM utilisation ({CLUSTER}): {len(files)} files under {folder}")
        else:
            nodes = cur_gpu_nodes(cur, months) if cur else []
            files = write_opencost(folder, nodes, seed)
            lines.append(f"demo OpenCost responses ({EKS_CLUSTER} on the demo CUR's p5/g5 nodes): "
                         f"{len(files)} files under {folder}")
    return lines
