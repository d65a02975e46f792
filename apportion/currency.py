"""Reporting currency: BillingCurrency amounts converted with the config's FX table, for reports only.

Line items keep BilledCost / EffectiveCost in BillingCurrency, and allocation stays exact there. When
`reporting_currency` is configured, every line item also gets x_ReportingCurrency, x_FxRate,
x_ReportingBilledCost and x_ReportingEffectiveCost. The rate of a line is the newest `fx_rates` entry
for (BillingCurrency -> reporting currency) dated on or before the charge's day (ChargePeriodStart,
UTC) and at most `fx_max_age_days` older; the same currency converts at 1. A line with no such rate
stops the month's build with an error naming the currency pair and the date.
"""

from __future__ import annotations

import csv
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa

from apportion.connectors.base import SourceError


class FxRateMissing(SourceError):
    """A line item's BillingCurrency has no usable rate to the reporting currency on its date."""



def fx_table(cfg) -> pa.Table:
    """The configured rates as (rate_date, from_ccy, to_ccy, rate) rows."""
    rows: list[tuple[date, str, str, Decimal]] = []
    source = cfg.fx_rates
    if isinstance(source, (str, Path)):
        path = Path(source)
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for n, r in enumerate(csv.DictReader(fh), 2):
                try:
                    rows.append((date.fromisoformat(r["date"].strip()), r["from"].strip().upper(),
                                 r["to"].strip().upper(), Decimal(r["rate"].strip())))
                except (KeyError, ValueError, AttributeError, InvalidOperation) as exc:
                    raise FxRateMissing(f"{path}: line {n}: expected date,from,to,rate ({exc})") from None
    elif source:
        rows = [(r.date, r.from_.upper(), r.to.upper(), r.rate) for r in source]
    return pa.table({
        "rate_date": pa.array([r[0] for r in rows], pa.date32()),
        "from_ccy": pa.array([r[1] for r in rows], pa.string()),
        "to_ccy": pa.array([r[2] for r in rows], pa.string()),
        "rate": pa.array([r[3] for r in rows], pa.decimal128(38, 12)),
    })


def apply_reporting_currency(con, cfg, view: str = "line_items_checked") -> None:
    """Wrap the month's checked line items with the reporting-currency columns (no-op without reporting_currency).

    Raises FxRateMissing (a SourceError: the month is not built) naming the currency pair and the first
    date that has no rate.
    """
    target = getattr(cfg, "reporting_currency", None)
    if not target:
        return
    if not re.fullmatch(r"[A-Z]{3}", target):
        raise FxRateMissing(f"reporting_currency {target!r} is not an ISO 4217 code")
    con.register("fx_rates_arrow", fx_table(cfg))
    con.execute("CREATE OR REPLACE TEMP TABLE fx_rates AS SELECT * FROM fx_rates_arrow WHERE to_ccy = ?", [target])
    con.unregister("fx_rates_arrow")
    max_age = int(getattr(cfg, "fx_max_age_days", 31))
    lit = f"'{target}'"
    con.execute(f"ALTER VIEW {view} RENAME TO {view}_billing")
    con.execute(f"""
        CREATE TEMP VIEW {view} AS
        WITH lines AS (
            SELECT *, CAST(timezone('UTC', ChargePeriodStart) AS DATE) AS _fx_day FROM {view}_billing
        ),
        joined AS (
            SELECT l.*, f.rate_date AS _fx_date, f.rate AS _fx_rate
            FROM lines AS l ASOF LEFT JOIN fx_rates AS f
                ON f.from_ccy = l.BillingCurrency AND l._fx_day >= f.rate_date
        ),
        rated AS (
            SELECT j.* EXCLUDE (_fx_date, _fx_rate),
                   CASE WHEN j.BillingCurrency = {lit} THEN CAST(1 AS DECIMAL(38, 12))
                        WHEN j._fx_day - j._fx_date <= {max_age} THEN j._fx_rate END AS x_FxRate
            FROM joined AS j
        )
        SELECT * EXCLUDE (_fx_day),
               CAST({lit} AS VARCHAR) AS x_ReportingCurrency,
               CAST(BilledCost * x_FxRate AS DECIMAL(38, 12)) AS x_ReportingBilledCost,
               CAST(EffectiveCost * x_FxRate AS DECIMAL(38, 12)) AS x_ReportingEffectiveCost
        FROM rated
    """)
    missing = con.execute(
        f"SELECT BillingCurrency, min(CAST(timezone('UTC', ChargePeriodStart) AS DATE)), count(*) FROM {view} "
        "WHERE x_QuarantineReason IS NULL AND x_FxRate IS NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()
    if missing:
        cur, day, n = missing[0]
        raise FxRateMissing(
            f"no FX rate {cur}->{target} for {day} ({n} line item(s)): add `{day},{cur},{target},<rate>` to "
            f"fx_rates (a rate is used for {max_age} days after its date)"
        )
