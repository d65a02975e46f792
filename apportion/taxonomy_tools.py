"""Taxonomy tooling: rules that can never match, and what a taxonomy change would do to a month."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import duckdb

from apportion.db import bounded
from apportion.models.config import ApportionConfig
from apportion.models.focus import SHARED, UNTAGGED, dimension_column
from apportion.models.taxonomy import Rule, Taxonomy, glob_to_regex


def _covers(earlier: str, later: str) -> bool:
    """Every value `later` can match is matched by `earlier` (conservative: only sure cases)."""
    if earlier == later or earlier == "*":
        return True
    if any(ch in later for ch in "*?"):
        return False
    return re.fullmatch(glob_to_regex(earlier), later) is not None


def shadows(earlier: Rule, later: Rule) -> bool:
    for field, pattern in earlier.match.items():
        if field not in later.match:
            return False
        if field == "tag":
            for key, glob in pattern.items():
                other = {k.lower(): v for k, v in later.match["tag"].items()}.get(key.lower())
                if other is None or not _covers(glob, other):
                    return False
        elif not _covers(pattern, later.match[field]):
            return False
    return True


def lint(tax: Taxonomy) -> list[str]:
    """Problems `apportion taxonomy check` reports beyond schema validation."""
    problems = []
    for name in tax.dimension_names:
        d = tax.dimensions[name]
        for i, later in enumerate(d.rules):
            for earlier in d.rules[:i]:
                if earlier.override == later.override and shadows(earlier, later):
                    problems.append(f"dimensions.{name}.rules[{i}] ({later.name!r}) can never match: "
                                    f"rule {earlier.name!r} before it matches everything it matches")
                    break
        for acct in d.accounts:
            for i, rule in enumerate(d.rules):
                if set(rule.match) == {"account"} and _covers(rule.match["account"], acct) and not rule.override:
                    # rules run before account mappings, so this mapping is dead
                    problems.append(f"dimensions.{name}.accounts[{acct}] can never apply: rule {rule.name!r} "
                                    "matches that account first")
    return problems


def diff(cfg: ApportionConfig, old: Taxonomy, new: Taxonomy, month: str) -> dict:
    """Allocate `month` of the current lake with both taxonomies (into temp dirs) and compare."""
    from apportion import steps
    from apportion.lake import ALLOCATIONS, current_files

    out: dict = {"month": month, "coverage": [], "teams": []}
    tmp = Path(tempfile.mkdtemp(prefix="apportion-taxdiff-", dir=cfg.warehouse))
    try:
        for label, tax in (("old", old), ("new", new)):
            for source in cfg.sources:
                if steps.partition_dir(cfg, steps.LINE_ITEMS, source.name, month).exists():
                    steps.allocate(cfg, source, month, tax, lake=tmp / label)
        con = duckdb.connect(config=bounded(cfg))  # a month's pieces, twice: bounded like every step
        for label in ("old", "new"):
            files = current_files(tmp / label, ALLOCATIONS, month=month)
            if not files:
                raise ValueError(f"no line items for {month}: run the month first")
            con.read_parquet([str(f) for f in files], union_by_name=True).create_view(label)  # no SQL text
        dims = [d for d in new.dimension_names if d in old.dimensions]
        for d in dims:
            col = dimension_column(d)
            row = []
            for label in ("old", "new"):
                row.append(con.execute(
                    f"SELECT sum(abs(EffectiveCost)) FILTER (WHERE {col} NOT IN ('{UNTAGGED}', '{SHARED}') "
                    f"AND coalesce({col}Reason, '') NOT LIKE 'spread:%') / nullif(sum(abs(EffectiveCost)) "
                    f"FILTER (WHERE {col} <> '{SHARED}'), 0) FROM {label}").fetchone()[0])
            out["coverage"].append({"dimension": d, "old": _f(row[0]), "new": _f(row[1])})
        teams = con.execute(
            "WITH o AS (SELECT x_Team t, sum(EffectiveCost) c FROM old GROUP BY 1), "
            "n AS (SELECT x_Team t, sum(EffectiveCost) c FROM new GROUP BY 1) "
            "SELECT coalesce(o.t, n.t), coalesce(o.c, 0), coalesce(n.c, 0), coalesce(n.c, 0) - coalesce(o.c, 0) "
            "FROM o FULL JOIN n ON o.t = n.t ORDER BY abs(coalesce(n.c, 0) - coalesce(o.c, 0)) DESC").fetchall()
        out["teams"] = [{"team": t, "old": o, "new": n, "change": c} for t, o, n, c in teams]
        con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _f(x):
    return None if x is None else round(float(x), 6)
