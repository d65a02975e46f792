"""A source kind is its connector, its SQL and one line in models/source_kinds.py: a toy kind defined in
this file goes through land -> line items -> allocate -> warehouse using only the declared contract."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import steps
from apportion.connectors.base import Connector, Delivery, DeliveryPlan
from apportion.models.config import load_config
from apportion.models.source_kinds import SOURCE_KINDS

REPO = Path(__file__).resolve().parent.parent

TOY_SQL = """
create or replace temp view line_items_checked as
with ctx as (select * from run_context)
select
    try_cast(s.amount as decimal(38, 12)) as BilledCost,
    try_cast(s.amount as decimal(38, 12)) as EffectiveCost,
    try_cast(s.amount as decimal(38, 12)) as ListCost,
    try_cast(s.amount as decimal(38, 12)) as ContractedCost,
    'toy-account' as BillingAccountId,
    'USD' as BillingCurrency,
    cast(ctx.billing_month || '-01' as timestamptz) as BillingPeriodStart,
    cast(ctx.billing_month || '-01' as timestamptz) + interval 1 month as BillingPeriodEnd,
    cast(s.day as timestamptz) as ChargePeriodStart,
    cast(s.day as timestamptz) + interval 1 day as ChargePeriodEnd,
    'Usage' as ChargeCategory,
    'Toy Cloud' as InvoiceIssuerName,
    'Toy Cloud' as ProviderName,
    'Toy Cloud' as PublisherName,
    'Compute' as ServiceCategory,
    'Toy Compute' as ServiceName,
    s.resource as ResourceId,
    to_json(map_from_entries([{'key': 'team', 'value': s.team}])) as Tags,
    ctx.source_name as x_SourceName,
    ctx.source_kind as x_SourceKind,
    ctx.billing_month as x_BillingMonth,
    row_number() over (order by s._file_idx, s._row) as x_LineId,
    ctx.delivery_id as x_DeliveryId,
    ctx.ingested_at as x_IngestedAt,
    s._file as x_SourceFile,
    s._row as x_SourceRow,
    true as x_HasResource,
    case when try_cast(s.amount as decimal(38, 12)) is null then 'non-numeric amount ' || s.amount end
        as x_QuarantineReason
from stg_toy as s, ctx
"""


class ToyConnector(Connector):
    """A folder of `<YYYY-MM>.csv` files (day, resource, team, amount)."""

    kind = "toy"

    def months(self) -> list[str]:
        return sorted(o.key[:7] for o in self.store.list("")[0])

    def plan(self, month: str) -> DeliveryPlan:
        objects = [o for o in self.store.list("")[0] if o.key == f"{month}.csv"]
        return DeliveryPlan(month, "toy-" + "-".join(o.etag for o in objects), objects, None, "toy")

    def file_select(self, con, key: str, path: Path, file_idx: int) -> str:
        return (f"SELECT '{key}' AS _file, {file_idx} AS _file_idx, row_number() OVER () AS _row, * "
                f"FROM read_csv('{path}', header = true, all_varchar = true)")

    def stage_sql(self, con, delivery: Delivery) -> str:
        selects = [self.file_select(con, k, p, i) for i, (k, p) in enumerate(delivery.files)]
        con.execute("CREATE OR REPLACE TEMP VIEW stg_toy AS " + " UNION ALL ".join(selects))
        return "stg_toy"

    def line_items_sql_text(self, delivery: Delivery) -> str:
        return TOY_SQL


def test_a_new_source_kind_needs_only_its_connector_sql_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCE_KINDS, "toy", f"{__name__}:ToyConnector")
    (tmp_path / "toy").mkdir()
    rows = [("2026-10-03", "vm-1", "research", "10.50"), ("2026-10-04", "vm-2", "ml-platform", "4.25"),
            ("2026-10-04", "vm-3", "nobody-knows", "0.25"), ("2026-10-05", "vm-4", "research", "n/a")]
    with open(tmp_path / "toy" / "2026-10.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["day", "resource", "team", "amount"])
        w.writerows(rows)
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax.pop("splits", None)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: toy-cloud\n    kind: toy\n    uri: toy\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    source = cfg.source("toy-cloud")

    delivery = steps.land(cfg, source, "2026-10")
    stats = steps.build_line_items(cfg, source, delivery)
    assert (stats.rows, stats.billed_cost, stats.quarantined_rows) == (3, Decimal("15.00"), 1)
    alloc = steps.allocate(cfg, source, "2026-10")
    assert alloc.billed_cost == Decimal("15.00")
    steps.build_warehouse(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    by_team = dict(con.execute("SELECT x_Team, sum(BilledCost) FROM allocations GROUP BY 1").fetchall())
    reasons = con.execute("SELECT reason FROM quarantined_rows").fetchall()
    con.close()
    assert by_team == {"research": Decimal("10.50"), "ml-platform": Decimal("4.25"), "untagged": Decimal("0.25")}
    assert reasons == [("non-numeric amount n/a",)]


def test_the_contract_is_declared():
    with pytest.raises(TypeError, match="abstract"):
        type("Incomplete", (Connector,), {"kind": "x"})(None)
