"""Commitments: unused Savings Plan / reservation commitment, and steady on-demand compute a commitment
would cover.

* unused: the CUR's unused commitment lines (CommitmentDiscountStatus 'Unused') per commitment: saving =
  their EffectiveCost (paid for nothing; exchange, sell or stop renewing).
* coverage: per billing account, on-demand compute usage (PricingCategory 'Standard', an instance type) is
  spread evenly over the hours of each line's charge period; the hourly floor is the lowest hourly on-demand
  spend over the hours the bill covers (an hour without on-demand usage makes it 0). saving = floor x covered
  hours x commitment_discount: a commitment of `floor` per hour is fully used every hour.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from apportion.savings.table import Finding, Results, confidence

HOUR = timedelta(hours=1)


def find(con, cfg, settings, results: Results) -> None:
    _unused(con, settings, results)
    _coverage(con, settings, results)


def _unused(con, settings, results: Results) -> None:
    rows = con.execute("""
        SELECT x_BillingMonth, x_SourceName, CommitmentDiscountId, CommitmentDiscountType, BillingCurrency,
               sum(EffectiveCost) AS cost, min(CAST(ChargePeriodStart AS DATE)), max(CAST(ChargePeriodStart AS DATE)),
               count(DISTINCT CAST(ChargePeriodStart AS DATE))
        FROM line_items
        WHERE CommitmentDiscountStatus = 'Unused' AND EffectiveCost > 0
        GROUP BY ALL ORDER BY ALL""").fetchall()
    for month, source, cid, ctype, ccy, cost, d0, d1, days in rows:
        level, reason = confidence(settings, basis="unused commitment is on the bill (its Unused lines)")
        results.findings.append(Finding(
            kind="commitments", month=month, team=None, project=None, workload=None, scope_type="resource",
            scope_id=cid or "?", provider=source, current=f"{ctype or 'commitment'}: unused", suggested=
            "exchange, resell or right-size the commitment at renewal", evidence={"unused_commitment_cost": cost},
            formula=f"unused commitment cost {cost.normalize():f}", saving=cost, currency=ccy, confidence=level,
            confidence_reason=reason, days_observed=days, period_start=str(d0), period_end=str(d1)))


def _coverage(con, settings, results: Results) -> None:
    discount = settings.commitment_discount
    rows = con.execute("""
        SELECT x_BillingMonth, x_SourceName, BillingAccountId, BillingCurrency, ChargePeriodStart, ChargePeriodEnd,
               sum(EffectiveCost) AS cost
        FROM line_items
        WHERE x_SourceKind = 'aws_cur' AND ChargeCategory = 'Usage' AND PricingCategory = 'Standard'
          AND ServiceCategory = 'Compute' AND x_InstanceType IS NOT NULL AND EffectiveCost > 0
          AND ChargePeriodEnd > ChargePeriodStart
        GROUP BY ALL ORDER BY ALL""").fetchall()
    groups: dict[tuple, list] = defaultdict(list)
    for month, source, acct, ccy, start, end, cost in rows:
        groups[(month, source, acct, ccy)].append((start, end, cost))
    for (month, source, acct, ccy), lines in groups.items():
        hourly: dict = defaultdict(lambda: Decimal(0))
        total = Decimal(0)
        for start, end, cost in lines:
            n = int((end - start) / HOUR) or 1
            share = cost / n
            for i in range(n):
                hourly[start + i * HOUR] += share
            total += cost
        first, last = min(hourly), max(hourly)
        covered = int((last - first) / HOUR) + 1
        floor = min(hourly.values()) if len(hourly) == covered else Decimal(0)
        if floor <= 0:
            continue
        saving = floor * covered * discount
        days = len({h.date() for h in hourly})
        level, reason = confidence(settings, days=days, basis=f"configured commitment discount "
                                   f"{discount.normalize():f}; assumes next month's floor is this month's")
        results.findings.append(Finding(
            kind="commitments", month=month, team=None, project=None, workload=None, scope_type="account",
            scope_id=str(acct), provider=source, current="on-demand compute",
            suggested=f"commit {floor.quantize(Decimal('0.0001'))} per hour (Savings Plan)",
            evidence={"hourly_floor": floor, "hours": covered, "commitment_discount": discount,
                      "on_demand_cost": total},
            formula=(f"hourly floor {floor.normalize():f} x hours {covered} x commitment discount "
                     f"{discount.normalize():f}"),
            saving=saving, currency=ccy, confidence=level, confidence_reason=reason, days_observed=days,
            period_start=str(first.date()), period_end=str(last.date())))
