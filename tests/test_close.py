"""Month close (issue 17): close a month, re-deliver it with a late credit and a changed line, and check the
restatement deltas tie exactly and name their reasons; --as-of; the refusals."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import steps
from apportion.cli import main
from apportion.close.exports import kept_packs
from apportion.close.store import CloseError, close_month, closed_dir, log_entries, reopen_month
from apportion.lake import ALLOCATIONS, partition_root
from apportion.models.config import load_config
from tests.test_allocation import REPO, ROWS, write_delivery

MONTH = "2026-10"
AFTER_END = datetime(2026, 11, 20, tzinfo=timezone.utc)
# the re-delivery: line "tagged" billed 98.32 -> 101.00 (a changed amount), and a late credit of -5.00
CHANGED = [r if r[0] != "tagged" else (*r[:8], "101.00", *r[9:]) for r in ROWS]
LATE_CREDIT = ("late-credit", "111111111111", "Credit", "AmazonEC2", "Amazon Elastic Compute Cloud", "", "", "",
               "-5.00", {}, {})


def build(cfg):
    src = cfg.sources[0]
    steps.build_line_items(cfg, src, steps.land(cfg, src, MONTH))
    steps.allocate(cfg, src, MONTH)
    steps.build_warehouse(cfg)
    steps.export_month(cfg, MONTH)  # the nightly job's published pack


@pytest.fixture()
def project(tmp_path):
    write_delivery(tmp_path / "bucket", ROWS, MONTH)
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax.pop("splits", None)  # attribution alone: hand-computable pieces
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    build(cfg)
    return tmp_path, cfg


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_close_redeliver_and_deltas_tie_with_reasons(project):
    tmp_path, cfg = project
    closed_total = sum(Decimal(r[8]) for r in ROWS)  # by hand: the bill as delivered first
    info = close_month(cfg, MONTH, now=AFTER_END)
    assert info["sources"]["aws-main"]["totals"][0]["billed_cost"] == str(closed_total.normalize())
    assert len(info["sources"]["aws-main"]["delivery_ids"]) == 1
    assert info["taxonomy"]["sha256"] and (closed_dir(cfg, MONTH) / "pack" / "control_totals.csv").is_file()
    frozen = {Path(v) for v in info["lake_versions"]}
    closed_pack = {p.name: p.read_bytes() for p in (closed_dir(cfg, MONTH) / "pack").iterdir()}

    # the provider re-delivers the month: one changed line and a late credit
    write_delivery(tmp_path / "bucket", CHANGED + [LATE_CREDIT], MONTH)
    build(cfg)
    build(cfg)  # twice: the version the close was taken from would be pruned now, were it not protected
    assert all(v.is_dir() for v in frozen)
    current_total = closed_total + Decimal("2.68") - Decimal("5.00")  # by hand

    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    tie = con.execute("SELECT closed_billed_cost, delta_billed_cost, current_billed_cost, ties_out "
                      "FROM restatement_tie_out WHERE source = 'aws-main' AND billing_month = ?", [MONTH]).fetchone()
    assert tie == (closed_total, Decimal("-2.32"), current_total, True)
    rows = con.execute("SELECT reason, team, project, workload, lines, closed_billed_cost, current_billed_cost, "
                       "delta_billed_cost, detail FROM restatements ORDER BY reason").fetchall()
    current = con.execute("SELECT sum(BilledCost) FROM allocations WHERE x_BillingMonth = ?", [MONTH]).fetchone()[0]
    con.close()
    assert current == current_total
    assert [r[:8] for r in rows] == [
        ("changed amount", "ml-platform", "llm-serving", "inference", 1, Decimal("98.32"), Decimal("101.00"),
         Decimal("2.68")),
        ("late credit", "shared", "shared", "shared", 1, Decimal(0), Decimal("-5.00"), Decimal("-5.00")),
    ]
    assert rows[0][8].startswith("re-delivered file: delivery ") and "->" in rows[0][8]
    assert closed_total + sum(r[7] for r in rows) == current_total

    # the finance file ties the same way: closed pack control totals + Σ delta = this pack's control totals
    pack = cfg.exports / MONTH
    deltas = read_csv(pack / "restatement_deltas.csv")
    assert sorted(d["reason"] for d in deltas) == ["changed amount", "late credit"]
    closed_ct = sum(Decimal(r["line_items_billed_cost"]) for r in read_csv(closed_dir(cfg, MONTH) / "pack" /
                                                                             "control_totals.csv"))
    now_ct = sum(Decimal(r["line_items_billed_cost"]) for r in read_csv(pack / "control_totals.csv"))
    assert closed_ct == closed_total and now_ct == current_total
    assert closed_ct + sum(Decimal(d["delta_billed_cost"]) for d in deltas) == now_ct
    # the closed version itself never moves
    assert {p.name: p.read_bytes() for p in (closed_dir(cfg, MONTH) / "pack").iterdir()} == closed_pack

    # a later re-delivery drops a line: a removed line, still tying
    write_delivery(tmp_path / "bucket", [r for r in CHANGED if r[0] != "notebook"] + [LATE_CREDIT], MONTH)
    build(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    removed = con.execute("SELECT closed_billed_cost, current_billed_cost, delta_billed_cost FROM restatements "
                          "WHERE reason = 'removed line'").fetchall()
    tie = con.execute("SELECT delta_billed_cost, current_billed_cost, ties_out FROM restatement_tie_out").fetchall()
    con.close()
    assert removed == [(Decimal("0.05"), Decimal(0), Decimal("-0.05"))]
    assert tie == [(Decimal("-2.37"), current_total - Decimal("0.05"), True)]


def test_reattribution_after_taxonomy_change(project):
    tmp_path, cfg = project
    close_month(cfg, MONTH, now=AFTER_END)
    tax = yaml.safe_load((tmp_path / "taxonomy.yaml").read_text())
    tax["dimensions"]["team"]["accounts"] = {"333333333333": "search"}  # the sandbox account moves to search
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    build(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    rows = con.execute("SELECT reason, detail, team, delta_billed_cost FROM restatements ORDER BY team").fetchall()
    tie = con.execute("SELECT delta_billed_cost, ties_out FROM restatement_tie_out").fetchall()
    con.close()
    moved = Decimal("3.25")  # the unknown-in-sandbox line, by hand
    assert {(r[0], r[1]) for r in rows} == {("re-attribution", "taxonomy changed since close")}
    assert [(r[2], r[3]) for r in rows] == [("research", -moved), ("search", moved)]  # sandbox: research -> search
    assert tie == [(Decimal(0), True)]


def test_export_as_of_returns_the_earlier_pack_byte_identical(project, capsys):
    tmp_path, cfg = project
    first = {p.name: p.read_bytes() for p in (cfg.exports / MONTH).iterdir()}
    (published_at, folder), = kept_packs(cfg, MONTH)
    # the first pack was published yesterday (the history folder's name is its publication time)
    folder.rename(folder.with_name("20261019T060000000000Z"))
    close_month(cfg, MONTH, now=AFTER_END)
    write_delivery(tmp_path / "bucket", CHANGED + [LATE_CREDIT], MONTH)
    build(cfg)
    assert len(kept_packs(cfg, MONTH)) == 2
    out = tmp_path / "asof"
    assert main(["export", "--config", str(cfg.config_path), "--month", MONTH, "--as-of", "2026-10-19",
                 "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert main(["export", "--config", str(cfg.config_path), "--month", MONTH, "--as-of", "2099-01-01",
                 "--out", str(out)]) == 0
    assert (out / "restatement_deltas.csv").is_file()
    capsys.readouterr()
    assert main(["export", "--config", str(cfg.config_path), "--month", MONTH, "--as-of", "2026-10-18",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "first kept version was published at 2026-10-19T06:00:00+00:00" in err and "export_history_days" in err
    # a file identical in both packs is stored once (hard link); retention removes packs older than N days
    (_, older), (_, newer) = kept_packs(cfg, MONTH)
    assert (older / "shared_cost_splits.csv").stat().st_ino == (newer / "shared_cost_splits.csv").stat().st_ino
    cfg.export_history_days = 30
    steps.export_month(cfg, MONTH)
    kept = [f for _, f in kept_packs(cfg, MONTH)]
    assert older not in kept and newer in kept  # published 2026-10-19: more than 30 days ago


def test_refusals_and_reopen_is_recorded(project, capsys):
    tmp_path, cfg = project
    with pytest.raises(CloseError, match="month 2026-10 has not ended: it can be closed from 2026-11-01"):
        close_month(cfg, MONTH, now=datetime(2026, 10, 31, 23, tzinfo=timezone.utc))
    with pytest.raises(CloseError, match="month 2026-09 is not in the warehouse"):
        close_month(cfg, "2026-09", now=AFTER_END)
    cfgp = str(cfg.config_path)
    assert main(["close", "--config", cfgp, "--month", "2099-01"]) == 1
    assert "month 2099-01 has not ended" in capsys.readouterr().err
    assert main(["close", "--config", cfgp, "--month", MONTH]) == 0
    assert main(["close", "--config", cfgp, "--month", MONTH]) == 1
    assert "already closed" in capsys.readouterr().err
    assert main(["close", "--config", cfgp, "--month", MONTH, "--reopen"]) == 1
    assert "re-opening 2026-10 needs a reason" in capsys.readouterr().err
    assert main(["close", "--config", cfgp, "--month", MONTH, "--reopen", "--reason", "  "]) == 1
    assert main(["close", "--config", cfgp, "--month", MONTH, "--reopen", "--reason", "AWS refund for Oct"]) == 0
    assert not closed_dir(cfg, MONTH).exists()
    assert [(e["action"], e.get("reason")) for e in log_entries(cfg)] == [("close", None),
                                                                          ("reopen", "AWS refund for Oct")]
    with pytest.raises(CloseError, match="is not closed"):
        reopen_month(cfg, MONTH, "again")
    # raw is untouched by close and re-open: the month still rebuilds from raw
    raw = sorted(p for p in cfg.raw.rglob("*") if p.is_file())
    build(cfg)
    assert sorted(p for p in cfg.raw.rglob("*") if p.is_file()) == raw


def test_prune_keeps_closed_versions_until_reopen(project):
    tmp_path, cfg = project
    info = close_month(cfg, MONTH, now=AFTER_END)
    (version,) = {Path(v) for v in info["lake_versions"]}
    assert version.parent == partition_root(cfg.lake, ALLOCATIONS, "aws-main", MONTH)
    for _ in range(2):
        write_delivery(tmp_path / "bucket", CHANGED + [LATE_CREDIT], MONTH)
        build(cfg)
    assert version.is_dir()
    reopen_month(cfg, MONTH, "rebuild after the refund")
    shutil.rmtree(cfg.exports)
    build(cfg)
    build(cfg)
    assert not version.exists()  # no longer frozen: pruned like any other old version
    assert json.loads((cfg.warehouse / "closed" / "closes.jsonl").read_text().splitlines()[-1])["action"] == "reopen"


def test_report_marks_closed_months_and_shows_deltas_escaped(project):
    from apportion.close.report import panel
    from apportion.report import write_report

    tmp_path, cfg = project
    close_month(cfg, MONTH, now=AFTER_END)
    write_delivery(tmp_path / "bucket", CHANGED + [LATE_CREDIT], MONTH)
    build(cfg)
    page = write_report(cfg, MONTH).read_text()
    assert 'data-testid="closed-month" data-month="2026-10"' in page
    assert 'data-testid="restatements"' in page and "late credit" in page and "+2.68 USD" in page
    # values from data are escaped: a team named like markup prints as text
    con = duckdb.connect()
    con.execute("CREATE TABLE closed_months AS SELECT '2026-10' billing_month, TIMESTAMPTZ '2026-11-20 00:00:00+00' "
                "closed_at, '<b>me</b>' closed_by")
    con.execute("CREATE TABLE restatement_tie_out AS SELECT '2026-10' billing_month, 's' source, 'USD' billing_currency, "
                "1.0 closed_billed_cost, 1.0 delta_billed_cost, 2.0 current_billed_cost, true ties_out")
    con.execute("CREATE TABLE restatements AS SELECT '2026-10' billing_month, 's' source, 'USD' billing_currency, "
                "'late credit' reason, 'x' detail, '<script>alert(1)</script>' team, 'p' project, 'w' workload, "
                "1 lines, 1.0 delta_billed_cost, 1.0 delta_effective_cost")
    html_ = panel(con)
    assert "<script>" not in html_ and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_ and "&lt;b&gt;me" in html_


def test_nightly_run_closes_after_n_days_and_checks_the_closed_pack(project, capsys):
    tmp_path, cfg = project
    (tmp_path / "apportion.yaml").write_text((tmp_path / "apportion.yaml").read_text() + "close_after_days: 5\n")
    assert main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", MONTH, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["months"][0]["steps"]["out_month_close"] == "succeeded"
    assert closed_dir(cfg, MONTH).is_dir() and log_entries(cfg)[0]["auto"] is True
    # the check: closed pack ties out; break it and the check says so
    from apportion.close.store import closed_pack_problems

    assert closed_pack_problems(cfg) == []
    ct = closed_dir(cfg, MONTH) / "pack" / "control_totals.csv"
    ct.write_text(ct.read_text().replace("true", "false"))
    assert any("control_totals.csv changed" in p for p in closed_pack_problems(cfg))
    assert main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", MONTH, "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["months"][0]["errors"]
    assert any(e.startswith("out_month_close: closed month does not tie out: 2026-10: closed pack file "
                            "control_totals.csv changed") for e in errors), errors
