"""The apportion code location for Kubernetes: the same assets, jobs and schedule as
apportion.pipelines.definitions, with every step of a run in its own pod (dagster-k8s's k8s_job_executor).

Loaded by the image's gRPC server (deploy/Dockerfile) and by tests/test_deploy.py; needs dagster-k8s (pinned in
requirements.lock; nothing in apportion imports this file).
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_k8s import k8s_job_executor

from apportion.models.config import load_config
from apportion.pipelines.location import build_definitions
from apportion.pipelines.partitions import billing_months_for
from apportion.pipelines.schedules import nightly_schedule

cfg = load_config(os.environ["APPORTION_CONFIG"])
base = build_definitions(cfg)
# Steps of one run on separate pods; at most 4 at once per run (the run queue bounds the runs themselves).
executor = k8s_job_executor.configured({"max_concurrent": 4, "env_config_maps": ["apportion-env"],
                                        "env_secrets": ["apportion-cloud-credentials"]})
jobs = [dg.define_asset_job(j.name, selection=j.selection, executor_def=executor if j.name in ("nightly", "sources")
                            else None, description=j.description)
        for j in base.jobs]
nightly = next(j for j in jobs if j.name == "nightly")
defs = dg.Definitions(assets=base.assets, jobs=jobs, resources=base.resources,
                      schedules=[nightly_schedule(nightly, cfg.open_months, billing_months_for(cfg))])
