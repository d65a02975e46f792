"""deploy/: what can be checked without a cluster. The Kubernetes code location loads with dagster-k8s (the image's
package) and runs the partition jobs on the k8s_job_executor; the Helm values' run launcher section is valid config
for dagster-k8s's K8sRunLauncher, its volumes and container settings are valid Kubernetes objects (the client's own
models), and the chart's instance settings say what deploy/dagster.yaml (the tested instance) says."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
INSTANCE = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())


def snake(key: str) -> str:
    if key == "applyLimitPerUniqueValue":  # camelCase in dagster.yaml too (the run queue's tag limits)
        return key
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def snake_keys(value):
    """The chart writes its camelCase values into dagster.yaml as snake_case keys (the config's own names)."""
    if isinstance(value, dict):
        return {snake(k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


def test_the_kubernetes_code_location_loads_and_runs_partitions_on_pods(monkeypatch):
    import dagster as dg

    monkeypatch.setenv("APPORTION_CONFIG", str(REPO / "demo" / "apportion.yaml"))
    spec = importlib.util.spec_from_file_location("k8s_location", REPO / "deploy" / "k8s_location.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defs = module.defs
    dg.Definitions.validate_loadable(defs)
    for name in ("nightly", "sources"):
        assert defs.resolve_job_def(name).executor_def.name == "k8s", name
    # the single writer's jobs run their few steps in the run's own pod
    assert defs.resolve_job_def("publish").executor_def.name != "k8s"
    assert [s.name for s in defs.schedules] == ["nightly"]
    # the executor's config names the config map and secret the chart mounts
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    assert [m["name"] for m in launcher["envConfigMaps"]] == ["apportion-env"]
    assert [s["name"] for s in launcher["envSecrets"]] == ["apportion-cloud-credentials"]
    src = (REPO / "deploy" / "k8s_location.py").read_text()
    assert '"env_config_maps": ["apportion-env"]' in src and '"env_secrets": ["apportion-cloud-credentials"]' in src


def test_the_helm_run_launcher_is_valid_k8s_run_launcher_config():
    import kubernetes
    from dagster._config import process_config, resolve_to_config_type
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.models import k8s_model_from_dict

    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        # what the chart fills in itself
        "instance_config_map": "apportion-dagster-instance", "service_account_name": "apportion-dagster",
        "dagster_home": "/opt/dagster/dagster_home", "postgres_password_secret": VALUES["global"]["postgresqlSecretName"],
        # ours (the chart passes config map and secret names as plain strings)
        "env_config_maps": [m["name"] for m in launcher["envConfigMaps"]],
        "env_secrets": [s["name"] for s in launcher["envSecrets"]],
        "volumes": launcher["volumes"],
        "volume_mounts": snake_keys(launcher["volumeMounts"]),
        "run_k8s_config": {snake(k): v for k, v in launcher["runK8sConfig"].items()},
    }
    result = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), config)
    assert result.success, [e.message for e in result.errors]
    for volume in launcher["volumes"]:
        k8s_model_from_dict(kubernetes.client.V1Volume, snake_keys(volume))
    for mount in launcher["volumeMounts"]:
        k8s_model_from_dict(kubernetes.client.V1VolumeMount, snake_keys(mount))
    k8s_model_from_dict(kubernetes.client.V1Container,
                        {"name": "run", **snake_keys(launcher["runK8sConfig"]["containerConfig"])})
    # the warehouse folder is on the shared volume every run and step pod mounts
    mounts = {m["name"]: m["mountPath"] for m in launcher["volumeMounts"]}
    assert mounts["apportion-work"] == "/var/lib/apportion"
    assert {v["name"] for v in launcher["volumes"]} == set(mounts)


def test_the_chart_instance_says_what_deploy_dagster_yaml_says():
    """The chart writes its own dagster.yaml; its queue, pool, retries and monitoring must be the tested ones."""
    chart = snake_keys(VALUES)
    assert chart["concurrency"] == INSTANCE["concurrency"]
    daemon = chart["dagster_daemon"]
    assert daemon["run_coordinator"]["type"] == "QueuedRunCoordinator"
    assert {"enabled": daemon["run_retries"]["enabled"], "max_retries": daemon["run_retries"]["max_retries"],
            "retry_on_asset_or_op_failure": daemon["run_retries"]["retry_on_asset_or_op_failure"]} \
        == INSTANCE["run_retries"]
    monitoring = {k: v for k, v in daemon["run_monitoring"].items()}
    for key in ("enabled", "start_timeout_seconds", "max_resume_run_attempts"):
        assert monitoring[key] == INSTANCE["run_monitoring"][key], key
    assert VALUES["postgresql"]["postgresqlScheme"] == INSTANCE["storage"]["postgres"]["postgres_db"]["scheme"]
    assert chart["telemetry"] == INSTANCE["telemetry"]


def test_the_image_installs_the_locked_set_and_serves_the_location_the_chart_names():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    lock = (REPO / "requirements.lock").read_text().split()
    assert "RUN pip install -r requirements.lock" in dockerfile
    assert re.search(r"^dagster-k8s==0\.29\.\d+$", "\n".join(lock), re.M)
    dagster = next(v.split("==")[1] for v in lock if v.startswith("dagster=="))
    k8s = next(v.split("==")[1] for v in lock if v.startswith("dagster-k8s=="))
    assert dagster.split(".")[2] == k8s.split(".")[2], "dagster 1.13.N goes with dagster-k8s 0.29.N"
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    path = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("-f") + 1]
    assert f"cp deploy/k8s_location.py {path}" in dockerfile
    assert f"--version {dagster}" in (REPO / "deploy" / "helm" / "values.yaml").read_text()
