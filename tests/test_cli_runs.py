"""`apportion run` records its runs in a persistent Dagster instance, and a backfill of N months builds
the sources N times but the warehouse, the report and each finance pack once."""

from __future__ import annotations

import json

import dagster as dg
import yaml

from apportion import cli
from tests.test_allocation import ROWS, write_delivery
from tests.test_definitions import DEMO_CONFIG


def test_a_backfill_publishes_once_and_the_ui_sees_the_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for month in ("2026-08", "2026-09", "2026-10"):
        write_delivery(tmp_path / "bucket", ROWS, month=month)
    tax = yaml.safe_load(DEMO_CONFIG.with_name("taxonomy.yaml").read_text())
    tax.pop("splits", None)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws\n    kind: aws_cur\n    uri: bucket/export\n")
    assert cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--all", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [m["month"] for m in summary["months"]] == ["2026-08", "2026-09", "2026-10"]
    assert all(m["success"] and m["warehouse_published"] for m in summary["months"])
    assert {t["month"] for t in summary["totals"]} == {"2026-08", "2026-09", "2026-10"}
    for month in ("2026-08", "2026-09", "2026-10"):
        assert (tmp_path / "data" / "exports" / month / "control_totals.csv").exists()

    home = tmp_path / "data" / ".dagster"
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs()
    by_job: dict[str, list[str]] = {}
    for run in runs:
        by_job.setdefault(run.job_name, []).append(run.tags.get("dagster/partition"))
    assert sorted(by_job["sources"]) == ["2026-08-01", "2026-09-01", "2026-10-01"]
    assert by_job["publish"] == ["2026-10-01"]  # one warehouse build for the whole backfill
    assert sorted(by_job["export_month"]) == ["2026-08-01", "2026-09-01"]
    assert by_job["report"] == ["2026-10-01"]  # once more, now that every month's pack exists
    # ... and only there: `publish` leaves the report out when more months follow (it renders a page per month)
    assert len(instance.fetch_materializations(dg.AssetKey("out_report"), limit=10).records) == 1
    assert all(r.is_success for r in runs)
    materialized = instance.get_latest_materialization_event(dg.AssetKey("out_warehouse"))
    assert materialized is not None  # the asset catalogue in the UI shows the warehouse as built
