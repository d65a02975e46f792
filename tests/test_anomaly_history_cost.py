"""Issue 10: a nightly run's anomaly contributor look-ups do not grow with the history.

A small versioned lake (the warehouse's layout: one version folder per source x month partition, `lake_files`
naming the current ones) holds 2 or 6 months of daily usage with a 2-day spike in every month. A first build looks
everything up; a nightly run then rebuilds the 2 open months (new versions). The test counts the contributor
queries the nightly run makes and the billing months they read: the same with 2 months of history as with 6
(before: one look-up per episode in the 92-day look-back, so 6 months looked up more, and read more months).
The contributors are checked against numbers computed by hand, and against a look-up without any stored result.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from apportion.guardrails import anomalies
from apportion.guardrails.config import AnomalySettings
from tests.test_guardrails_budgets import GOOD, project

OPEN = ["2026-09", "2026-10"]
HISTORY_6 = ["2026-05", "2026-06", "2026-07", "2026-08", *OPEN]
SPIKE_DAY = {"2026-10": 10}  # other months: the 20th and 21st


def _days(month: str) -> list[date]:
    y, m = map(int, month.split("-"))
    first = date(y, m, 1)
    nxt = date(y + m // 12, m % 12 + 1, 1)
    return [first + timedelta(days=i) for i in range((nxt - first).days)]


def _write_month(lake, month: str, extra: dict | None = None) -> None:
    """research / Amazon EC2: i-base 100 a day; i-spike-<month> 1000 on two days (a 2-day episode). A new version
    folder per call (as a nightly rebuild writes), `extra` = {day: (resource, cost)} added pieces."""
    spike = SPIKE_DAY.get(month, 20)
    rows = []
    for d in _days(month):
        rows.append((d, "i-base", Decimal(100)))
        if d.day in (spike, spike + 1):
            rows.append((d, f"i-spike-{month}", Decimal(1000)))
        if extra and d in extra:
            rows.append((d, *extra[d]))
    n = len(rows)
    version = f"v-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
    common = {"x_SourceName": pa.array(["aws-main"] * n), "x_BillingMonth": pa.array([month] * n),
              "x_LineId": pa.array(range(n), pa.int64())}
    alloc = pa.table({
        **common,
        "ChargePeriodStart": pa.array([datetime(d.year, d.month, d.day, tzinfo=timezone.utc) for d, _, _ in rows],
                                      pa.timestamp("us", tz="UTC")),
        "ChargeCategory": pa.array(["Usage"] * n), "EffectiveCost": pa.array([c for _, _, c in rows], pa.decimal128(38, 12)),
        "BillingCurrency": pa.array(["USD"] * n), "x_Team": pa.array(["research"] * n),
        "ServiceName": pa.array(["Amazon EC2"] * n), "SubAccountId": pa.array(["111"] * n),
        "ResourceId": pa.array([r for _, r, _ in rows])})
    items = pa.table({**common, "x_ModelId": pa.array([None] * n, pa.string()), "Tags": pa.array(["{}"] * n)})
    for table, data in (("allocations", alloc), ("line_items", items)):
        folder = lake / table / "x_SourceName=aws-main" / f"x_BillingMonth={month}" / version
        folder.mkdir(parents=True)
        pq.write_table(data, folder / "data.parquet")
        (folder.parent / "CURRENT").write_text(version)


def _connect(lake) -> duckdb.DuckDBPyConnection:
    """The warehouse's shape: views over the current versions' files, and lake_files naming them."""
    con = duckdb.connect()
    files = {t: sorted(str(p / (p / "CURRENT").read_text() / "data.parquet")
                       for p in (lake / t / "x_SourceName=aws-main").iterdir()) for t in ("allocations", "line_items")}
    con.execute("CREATE TABLE lake_files (lake_table VARCHAR, path VARCHAR)")
    con.executemany("INSERT INTO lake_files VALUES (?, ?)", [(t, p) for t, ps in files.items() for p in ps])
    for t, ps in files.items():
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({ps!r}, hive_partitioning = false)")
    return con


class Counting:
    """The connection, counting the contributor queries (they read the API key tag) and the months they read."""

    def __init__(self, con):
        self.con, self.queries, self.months = con, 0, set()

    def execute(self, sql, params=None):
        if "key_alias" in sql:
            self.queries += 1
            self.months |= {p for p in params or [] if isinstance(p, str) and re.fullmatch(r"\d{4}-\d{2}", p)}
        return self.con.execute(sql, params) if params is not None else self.con.execute(sql)

    def __getattr__(self, name):
        return getattr(self.con, name)


def _history(tmp_path, months: list[str]):
    tmp_path.mkdir(exist_ok=True)
    cfg, _ = project(tmp_path, GOOD)
    lake = tmp_path / "lake"
    for m in months:
        _write_month(lake, m)
    anomalies.find(_connect(lake), cfg, AnomalySettings())  # the build that wrote these months
    for m in OPEN:  # the nightly run rebuilds the open months
        _write_month(lake, m)
    counting = Counting(_connect(lake))
    episodes, _ = anomalies.find(counting, cfg, AnomalySettings())
    return cfg, lake, counting, episodes


def _contributors(episodes) -> dict:
    return {(e["series"], e["first_day"]): json.loads(e["top_contributors"]) for e in episodes}


def test_nightly_contributor_lookups_do_not_grow_with_history(tmp_path):
    _, _, two, two_eps = _history(tmp_path / "two", OPEN)
    cfg, lake, six, six_eps = _history(tmp_path / "six", HISTORY_6)
    # the 6-month ledger has one more month in the look-back with an episode (August; July ends before it)
    assert {e["first_day"] for e in two_eps} == {date(2026, 9, 20), date(2026, 10, 10)}
    assert {e["first_day"] for e in six_eps} == {date(2026, 8, 20), date(2026, 9, 20), date(2026, 10, 10)}
    # the nightly run looks up only the episodes whose window reaches the rebuilt months: one query per series
    # kind with episodes there (team x service, source), reading August (the September episode's baseline) to
    # October, whatever the history
    assert (six.queries, six.months) == (two.queries, two.months) == (2, {"2026-08", "2026-10"})
    # by hand, the September episode (20th-21st, baseline 28 days from August 23rd): i-spike-2026-09 2 x 1000 - 0;
    # i-base 2 x 100 - 28 x 100 x 2 / 28 = 0 (not a contributor); the account 2 x 1100 - 2800 x 2 / 28 = 2000
    sep = {"account": [{"value": "111", "delta": "2000.00"}],
           "resource": [{"value": "i-spike-2026-09", "delta": "2000.00"}]}
    assert _contributors(six_eps)[("research / Amazon EC2", date(2026, 9, 20))] == sep
    assert _contributors(six_eps)[("aws-main", date(2026, 9, 20))] == sep
    # August's (kept from the first build) are what a look-up from scratch finds
    assert _contributors(six_eps)[("research / Amazon EC2", date(2026, 8, 20))] == {
        "account": [{"value": "111", "delta": "2000.00"}], "resource": [{"value": "i-spike-2026-08", "delta": "2000.00"}]}
    anomalies.contributors_cache_path(cfg).unlink()
    cold, _ = anomalies.find(_connect(lake), cfg, AnomalySettings())
    assert _contributors(cold) == _contributors(six_eps)


def test_a_rebuilt_month_under_a_kept_episode_is_looked_up_again(tmp_path):
    cfg, lake, _, _ = _history(tmp_path, HISTORY_6)
    # August restated: a third resource on the episode's first day (+500: expected 100, actual 1600)
    _write_month(lake, "2026-08", extra={date(2026, 8, 20): ("i-late", Decimal(500))})
    counting = Counting(_connect(lake))
    episodes, _ = anomalies.find(counting, cfg, AnomalySettings())
    # the August episode reads July 23rd to August 21st: looked up again (one query per series kind), the
    # September one (August 23rd on) too; October's is kept
    assert (counting.queries, counting.months) == (2, {"2026-07", "2026-09"})
    aug = _contributors(episodes)[("research / Amazon EC2", date(2026, 8, 20))]
    # by hand: i-spike 2000 - 0, i-late 500 - 0; the account 2700 - 2800 x 2 / 28 = 2500
    assert aug == {"account": [{"value": "111", "delta": "2500.00"}],
                   "resource": [{"value": "i-spike-2026-08", "delta": "2000.00"},
                                {"value": "i-late", "delta": "500.00"}]}
