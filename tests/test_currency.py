"""Reporting currency: x_Reporting* columns from the config's FX table; allocation stays in BillingCurrency."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from apportion import steps
from apportion.currency import FxRateMissing
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config

REPO = Path(__file__).resolve().parent.parent
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
HEADER = ("BilledCost,EffectiveCost,BillingAccountId,BillingCurrency,BillingPeriodStart,BillingPeriodEnd,ChargeCategory,"
          "ChargePeriodStart,ChargePeriodEnd,ProviderName,PublisherName,InvoiceIssuerName,ServiceName,ServiceCategory,Tags\n")


def focus_file(folder: Path, rows: list[tuple[str, str, str]]) -> None:
    """rows: (cost, currency, day) in March 2024."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'{c},{c},acct,{cur},2024-03-01,2024-04-01,Usage,{day},{day}T01:00:00Z,P,P,P,S,Compute,'
             '"{""team"":""search""}"' for c, cur, day in rows]
    (folder / "2024-03.csv").write_text(HEADER + "\n".join(lines) + "\n")


def config(tmp_path: Path, extra: str):
    path = tmp_path / "apportion.yaml"
    path.write_text(f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {TAXONOMY}\n{extra}sources:\n  - name: eu\n"
                    f"    kind: focus\n    uri: {tmp_path / 'data'}\n")
    return load_config(path)


def build(cfg):
    delivery = steps.land(cfg, cfg.sources[0], "2024-03")
    stats = steps.build_line_items(cfg, cfg.sources[0], delivery)
    return stats, steps.allocate(cfg, cfg.sources[0], "2024-03")


def test_reporting_columns_and_exact_allocation_in_billing_currency(tmp_path):
    focus_file(tmp_path / "data", [("100.00", "EUR", "2024-03-02"), ("10.01", "EUR", "2024-03-20"),
                                   ("5.5", "USD", "2024-03-03"), ("0.000000000001", "EUR", "2024-03-31")])
    cfg = config(tmp_path, "reporting_currency: USD\nfx_rates:\n"
                           "  - {date: 2024-03-01, from: EUR, to: USD, rate: 1.0834}\n"
                           "  - {date: 2024-03-15, from: EUR, to: USD, rate: 1.0912}\n"
                           "  - {date: 2024-03-15, from: EUR, to: GBP, rate: 0.85}\n")
    stats, alloc = build(cfg)
    assert stats.billed_cost == Decimal("115.510000000001") == alloc.billed_cost  # billing currencies untouched
    path = steps.partition_dir(cfg, steps.LINE_ITEMS, "eu", "2024-03") / "data.parquet"
    rows = duckdb.connect().execute(
        "SELECT BillingCurrency, BilledCost, x_ReportingCurrency, x_FxRate, x_ReportingBilledCost, "
        "x_ReportingEffectiveCost FROM read_parquet(?) ORDER BY x_SourceRow", [str(path)]).fetchall()
    assert rows == [
        ("EUR", Decimal("100"), "USD", Decimal("1.0834"), Decimal("108.34"), Decimal("108.34")),
        ("EUR", Decimal("10.01"), "USD", Decimal("1.0912"), Decimal("10.922912"), Decimal("10.922912")),
        ("USD", Decimal("5.5"), "USD", Decimal("1"), Decimal("5.5"), Decimal("5.5")),
        ("EUR", Decimal("0.000000000001"), "USD", Decimal("1.0912"), Decimal("0.000000000001"),
         Decimal("0.000000000001")),
    ]


def test_missing_rate_names_currency_and_date(tmp_path):
    focus_file(tmp_path / "data", [("1", "EUR", "2024-03-05"), ("2", "JPY", "2024-03-07")])
    cfg = config(tmp_path, "reporting_currency: USD\nfx_rates:\n  - {date: 2024-03-01, from: EUR, to: USD, rate: 1.08}\n")
    with pytest.raises(FxRateMissing, match=r"no FX rate JPY->USD for 2024-03-07 \(1 line item\(s\)\)"):
        build(cfg)
    # a rate dated after the charge is not used; nor is one older than fx_max_age_days
    (tmp_path / "fx.csv").write_text("date,from,to,rate\n2024-03-06,EUR,USD,1.08\n2024-01-01,JPY,USD,0.0067\n")
    cfg = config(tmp_path, "reporting_currency: USD\nfx_rates: fx.csv\nfx_max_age_days: 40\n")
    with pytest.raises(FxRateMissing, match=r"no FX rate EUR->USD for 2024-03-05"):
        build(cfg)
    (tmp_path / "fx.csv").write_text("date,from,to,rate\n2024-03-01,EUR,USD,1.08\n2024-01-01,JPY,USD,0.0067\n")
    cfg = config(tmp_path, "reporting_currency: USD\nfx_rates: fx.csv\nfx_max_age_days: 40\n")
    with pytest.raises(FxRateMissing, match=r"no FX rate JPY->USD for 2024-03-07"):
        build(cfg)
    cfg = config(tmp_path, "reporting_currency: USD\nfx_rates: fx.csv\nfx_max_age_days: 70\n")
    stats, _ = build(cfg)
    assert stats.rows == 2


def test_no_reporting_currency_leaves_columns_null_and_config_errors(tmp_path):
    focus_file(tmp_path / "data", [("1", "EUR", "2024-03-05")])
    cfg = config(tmp_path, "")
    build(cfg)
    path = steps.partition_dir(cfg, steps.LINE_ITEMS, "eu", "2024-03") / "data.parquet"
    # nothing to convert: the line items carry no reporting-currency columns, the pieces carry them empty
    written = {r[0] for r in duckdb.connect().execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()}
    assert "BilledCost" in written and not {"x_ReportingCurrency", "x_FxRate"} & written
    pieces = steps.partition_dir(cfg, steps.ALLOCATIONS, "eu", "2024-03") / "data.parquet"
    assert duckdb.connect().execute("SELECT x_ReportingCurrency, x_ReportingBilledCost FROM read_parquet(?)",
                                    [str(pieces)]).fetchall() == [(None, None)]
    with pytest.raises(ConfigError, match="reporting_currency"):
        config(tmp_path, "reporting_currency: dollars\n")
    with pytest.raises(ConfigError, match="fx_rates"):
        config(tmp_path, "reporting_currency: USD\nfx_rates: missing.csv\n")
    with pytest.raises(ConfigError, match="rate"):
        config(tmp_path, "reporting_currency: USD\nfx_rates:\n  - {date: 2024-03-01, from: EUR, to: USD, rate: -1}\n")


def test_finance_pack_carries_reporting_currency(tmp_path):
    import csv

    focus_file(tmp_path / "data", [("100.00", "EUR", "2024-03-02"), ("5.5", "USD", "2024-03-03")])
    cfg = config(tmp_path, "reporting_currency: USD\nfx_rates:\n  - {date: 2024-03-01, from: EUR, to: USD, rate: 1.0834}\n")
    build(cfg)
    steps.build_warehouse(cfg)
    out = steps.export_month(cfg, "2024-03")
    with open(out / "allocation_by_team.csv") as fh:
        rows = {(r["billing_currency"], r["team"]): r for r in csv.DictReader(fh)}
    eur, usd = rows[("EUR", "search")], rows[("USD", "search")]
    # amounts are exact, written without trailing zeros
    assert (eur["billed_cost"], eur["reporting_currency"], eur["reporting_billed_cost"]) == ("100", "USD", "108.34")
    assert (usd["reporting_currency"], usd["reporting_billed_cost"]) == ("USD", "5.5")
    lines = duckdb.connect().execute(
        f"SELECT reporting_billed_cost FROM read_parquet('{out / 'allocation_lines.parquet'}')").fetchall()
    assert sum(Decimal(r[0]) for r in lines) == Decimal("113.84")
