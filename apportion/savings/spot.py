"""Spot for interruptible work: on-demand GPU instance-hours in the cloud bill attributed to an
interruptible workload (`savings.spot_workloads`, default training).

saving = on-demand EffectiveCost x spot_discount; or, with `savings.spot_price_history` (a CSV with
InstanceType and SpotPrice columns, e.g. `aws ec2 describe-spot-price-history` flattened), instance-hours x
(on-demand rate - mean spot price of that instance type). An instance type missing from the history file is
skipped with the reason.
"""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from pathlib import Path

from apportion.savings.table import Finding, Results, Skip, confidence

GPU_FAMILY = r"^(ml\.)?(p[0-9]+[a-z]*|g[0-9]+[a-z]*|trn[0-9]+[a-z]*|inf[0-9]+[a-z]*|dl[0-9]+[a-z]*)\."


def spot_prices(path: Path) -> dict[str, Decimal]:
    """Mean spot price per instance type from the history CSV; errors name the file and line."""
    sums: dict[str, list[Decimal]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.lower().replace("_", ""): c for c in reader.fieldnames or []}
        if "instancetype" not in cols or "spotprice" not in cols:
            raise ValueError(f"{path}: line 1: needs InstanceType and SpotPrice columns")
        for n, row in enumerate(reader, start=2):
            itype = (row[cols["instancetype"]] or "").strip()
            try:
                price = Decimal(str(row[cols["spotprice"]]).strip())
            except InvalidOperation:
                raise ValueError(f"{path}: line {n}: SpotPrice {row[cols['spotprice']]!r} is not a number") from None
            if not itype or not price.is_finite() or price < 0:
                raise ValueError(f"{path}: line {n}: needs an InstanceType and a non-negative SpotPrice")
            sums.setdefault(itype, []).append(price)
    return {k: sum(v, Decimal(0)) / len(v) for k, v in sums.items()}


def find(con, cfg, settings, results: Results) -> None:
    workloads = [w.lower() for w in settings.spot_workloads]
    if not workloads:
        return
    history = spot_prices(settings.spot_price_history) if settings.spot_price_history else None
    marks = ", ".join("?" for _ in workloads)
    rows = con.execute(f"""
        SELECT x_BillingMonth, x_SourceName, sv_team, sv_project, sv_workload, x_InstanceType, BillingCurrency,
               sum(EffectiveCost * sv_ratio) AS cost,
               sum(CAST(ConsumedQuantity AS DECIMAL(38, 12)) * sv_ratio) AS hours,
               count(DISTINCT ContractedUnitPrice) AS rates, max(ContractedUnitPrice) AS rate,
               min(CAST(ChargePeriodStart AS DATE)), max(CAST(ChargePeriodStart AS DATE)),
               count(DISTINCT CAST(ChargePeriodStart AS DATE))
        FROM sv_pieces
        WHERE x_SourceKind = 'aws_cur' AND ChargeCategory = 'Usage' AND PricingCategory = 'Standard'
          AND x_InstanceType IS NOT NULL AND regexp_matches(x_InstanceType, ?)
          AND lower(sv_workload) IN ({marks}) AND EffectiveCost > 0
        GROUP BY ALL ORDER BY ALL""", [GPU_FAMILY, *workloads]).fetchall()
    for month, source, team, project, workload, itype, ccy, cost, hours, n_rates, rate, d0, d1, days in rows:
        scope = f"{source}: {itype} ({team}/{project}/{workload})"
        if history is not None:
            spot = history.get(itype) or history.get(itype.removeprefix("ml."))
            if spot is None:
                results.skipped.append(Skip("spot", month, scope, f"instance type {itype} is not in the spot price "
                                            f"history file {settings.spot_price_history.name}"))
                continue
            if n_rates != 1 or rate is None or not hours:
                results.skipped.append(Skip("spot", month, scope, "on-demand rate varies or instance-hours unknown"))
                continue
            saving = hours * (rate - spot)
            evidence = {"instance_hours": hours, "on_demand_rate": rate, "mean_spot_price": spot, "on_demand_cost": cost}
            formula = (f"instance-hours {hours.normalize():f} x (on-demand rate {rate.normalize():f} - mean spot price "
                       f"{spot.normalize():f})")
            basis = "spot price history file"
        else:
            discount = settings.spot_discount
            if discount is None:
                results.skipped.append(Skip("spot", month, scope, "no spot_discount and no spot_price_history configured"))
                continue
            saving = cost * discount
            evidence = {"on_demand_cost": cost, "instance_hours": hours, "spot_discount": discount}
            formula = f"on-demand cost {cost.normalize():f} x spot discount {discount.normalize():f}"
            basis = "configured spot discount"
        level, reason = confidence(settings, days=days, cap="medium",
                                   basis=f"{basis}; only checkpointed, interruptible work qualifies")
        results.findings.append(Finding(
            kind="spot", month=month, team=team, project=project, workload=workload, scope_type="resource",
            scope_id=itype, provider="aws", current=f"{itype} on-demand", suggested=f"{itype} spot",
            evidence=evidence, formula=formula, saving=saving, currency=ccy, confidence=level,
            confidence_reason=reason, days_observed=days, period_start=str(d0), period_end=str(d1)))
