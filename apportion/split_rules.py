"""Shared-cost split rules: turn one allocation piece into several, exactly, and say why.

Runs inside the allocation step on the temp table `alloc` (this source's pieces, one per line item
after attribution) with the views `month_line_items` (this source's line items) and `basis` (every
source's pre-split pieces of the month joined to their line items), which give the weights.

Selection and weights are SQL (patterns are bound parameters, never SQL text); the arithmetic is
`split_exact` (largest remainder on integer units), so the pieces of a line sum to it exactly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import duckdb
import pyarrow as pa

from apportion.models.focus import LINE_ITEM_COLUMNS, SHARED, UNTAGGED, dimension_column
from apportion.models.taxonomy import RULE_FIELDS, SplitRule, SplitWeights, Taxonomy, glob_to_regex, split_order
from apportion.splits import split_exact

NUMERIC_PREFIXES = ("DECIMAL", "BIGINT", "INTEGER", "DOUBLE", "HUGEINT")
MEASURES = {c.name for c in LINE_ITEM_COLUMNS if c.type.startswith(NUMERIC_PREFIXES)}


class SplitConflictError(ValueError):
    """Two split rules claim the same line item."""


def workload_classes_select(con: duckdb.DuckDBPyConnection, tax: Taxonomy, source: str) -> str:
    """SELECT over `source` deciding value classes from the workload: after tags and rules, before account
    mappings and defaults. A projection, not an UPDATE: a month of pieces must stream."""
    joins, replaces = [], []
    for i, (name, d) in enumerate((n, d) for n, d in tax.dimensions.items() if d.workload_classes):
        col = dimension_column(name)
        table = pa.table({"workload": list(d.workload_classes), "value": list(d.workload_classes.values())})
        con.register(f"workload_classes_{i}", table)
        keep = f"(a.{col}Reason like 'tag:%' or a.{col}Reason like 'rule:%' or a.{col}Reason like 'override:%')"
        joins.append(f"left join workload_classes_{i} as w{i} on w{i}.workload = a.x_Workload")
        replaces.append(f"case when w{i}.value is not null and not {keep} then w{i}.value else a.{col} end as {col}")
        replaces.append(f"case when w{i}.value is not null and not {keep} then 'workload:' || a.x_Workload "
                        f"else a.{col}Reason end as {col}Reason")
    if not replaces:
        return f"select * from {source}"
    return f"select a.* replace ({', '.join(replaces)}) from {source} as a {' '.join(joins)}"


def _conditions(match: dict, alias: str, params: list) -> list[str]:
    """SQL conditions for a rule-syntax `match` over line-item columns of `alias`."""
    out = []
    for field, pattern in match.items():
        if field == "tag":
            for key, glob in pattern.items():
                out.append(
                    f"exists (select 1 from json_each(nullif(CAST({alias}.Tags AS VARCHAR), '')) AS e "
                    "where lower(e.key) = ? and regexp_full_match(trim(e.value ->> '$'), ?))"
                )
                params += [key.strip().lower(), glob_to_regex(glob)]
        else:
            out.append(f'regexp_full_match(coalesce(CAST({alias}."{RULE_FIELDS[field]}" AS VARCHAR), \'\'), ?)')
            params.append(glob_to_regex(pattern))
    return out


def _dimension_conditions(dimensions: dict, alias: str, params: list) -> list[str]:
    out = []
    for dim, pattern in dimensions.items():
        out.append(f"regexp_full_match(coalesce({alias}.{dimension_column(dim)}, ''), ?)")
        params.append(glob_to_regex(pattern))
    return out


def _partition_expr(field: str, tax: Taxonomy, alias_piece: str, alias_line: str) -> str:
    if field in tax.dimensions:
        return f"{alias_piece}.{dimension_column(field)}"
    return f'CAST({alias_line}."{RULE_FIELDS[field]}" AS VARCHAR)'


def spread_rules(tax: Taxonomy) -> list[SplitRule]:
    """`spread_untagged: true` on a dimension = a proportional split of its untagged pieces."""
    return [
        SplitRule(name=f"spread-untagged-{name}", dimensions={name: UNTAGGED}, method="proportional", by=[name],
                  weights=SplitWeights())
        for name, d in tax.dimensions.items() if d.spread_untagged
    ]


def prepare_splits(con: duckdb.DuckDBPyConnection, tax: Taxonomy) -> tuple[str, list]:
    """`split_lines` and `basis_flat` (see _prepare), and a SQL condition over a pre-split piece `a` (with
    its parameters) that is true for every piece a rule may split: its line is taken by a rule's `match`,
    or its dimensions meet those of a rule without `match`. Only those pieces need to go into `alloc`: a
    piece no rule takes is never changed, so its dimensions stay the ones tested here (chained rules only
    retarget pieces an earlier rule split, which are in `alloc` already)."""
    all_rules = split_order(tax.splits) + spread_rules(tax)
    _prepare(con, tax, all_rules)
    params: list = []
    matched = [f"m{i}" for i, rule in enumerate(all_rules) if rule.match]
    ors = [f"a.x_LineId IN (SELECT x_LineId FROM split_lines WHERE {' OR '.join(matched)})"] if matched else []
    for rule in all_rules:
        if not rule.match:
            ors.append("(" + (" AND ".join(_dimension_conditions(rule.dimensions, "a", params)) or "true") + ")")
    return " OR ".join(ors) or "false", params


def apply_splits(con: duckdb.DuckDBPyConnection, tax: Taxonomy, prepared: bool = False) -> dict[str, int]:
    """Apply every split rule, in dependency order, to `alloc`. Returns pieces created per rule.
    `prepared`: prepare_splits already ran on this connection."""
    created: dict[str, int] = {}
    rules = split_order(tax.splits)
    all_rules = rules + spread_rules(tax)
    if not prepared:
        _prepare(con, tax, all_rules)
    _check_conflicts(con, rules)
    for i, rule in enumerate(all_rules):
        created[rule.name] = _apply(con, tax, rule, spread=rule.name.startswith("spread-untagged-"), index=i)
    _renumber(con, tax)
    return {k: v for k, v in created.items() if v}


def _line_fields(tax: Taxonomy, rules: list[SplitRule]) -> list[str]:
    """Line-item columns the rules partition by (dimensions come from the pieces themselves)."""
    cols = []
    for rule in rules:
        for f in rule.partition_by:
            if f not in tax.dimensions and RULE_FIELDS[f] not in cols:
                cols.append(RULE_FIELDS[f])
    return cols


def _prepare(con, tax: Taxonomy, rules: list[SplitRule]) -> None:
    """Two passes over the month instead of two per rule.

    `split_lines`: this source's line items that some rule's `match` takes (one boolean per rule) with
    the line fields rules partition by. `basis_flat`: every source's pre-split pieces with the dimension
    values, measures and line fields the weights need, so each rule's weights are one small aggregate.
    """
    params: list = []
    flags = []
    for i, rule in enumerate(rules):
        conds = _conditions(rule.match, "li", params)
        flags.append(f"({' and '.join(conds) or 'true'}) AS m{i}")
    fields = _line_fields(tax, rules)
    any_flag = " or ".join(f"m{i}" for i in range(len(rules))) or "false"
    # The patterns are tested once per distinct combination of the columns they read (a few thousand at most
    # in a month of millions of lines: 12 regular expressions and a tag-map lookup per line were most of the
    # allocation step), then the matching combinations are joined back to the month's lines.
    match_cols = sorted({"Tags" if f == "tag" else RULE_FIELDS[f] for rule in rules for f in rule.match})
    names = [f"m{i}" for i in range(len(rules))]
    line_select = ", ".join(["li.x_LineId", *(f"f.{m}" for m in names),
                             *(f'CAST(li."{c}" AS VARCHAR) AS "{c}"' for c in fields)])
    if match_cols:
        cols = ", ".join(f'"{c}"' for c in match_cols)
        on = " and ".join(f'li."{c}" is not distinct from f."{c}"' for c in match_cols)
        con.execute(f"create or replace temp table split_flags as select * from (select {cols}, {', '.join(flags)} "
                    f"from (select distinct {cols} from month_line_items) as li) where {any_flag}", params)
        con.execute(f"create or replace temp table split_lines as select {line_select} "
                    f"from month_line_items li join split_flags f on {on}")
        con.execute("drop table split_flags")
    else:  # no rule has a `match`: every flag is true
        con.execute(f"create or replace temp table split_lines as select {line_select} "
                    f"from month_line_items li, (select {', '.join(flags)}) as f where {any_flag}", params)
    # weights: every rule's weights are sums of a measure by dimension values and line fields, so the month's
    # pieces are summed once to that grain (a few thousand rows where the month has millions)
    dims = [dimension_column(d) for d in tax.dimension_names]
    group_cols, measures = _basis_columns(tax, rules)
    sums = [f'sum(CAST(b."{m}" AS DECIMAL(38, 12))) AS "{m}"' for m in ("BilledCost", "EffectiveCost", "ListCost",
                                                                        *measures)]
    group = ["b.x_SourceName", *(f"b.{d}" for d in dims), *(f'b."{c}"' for c in group_cols)]
    if set(measures) & set(group_cols):  # a measure that is also matched on: keep every piece
        group.append("b.x_LineId")
    con.execute(f"create or replace temp table basis_flat as select {', '.join(group)}, {', '.join(sums)} "
                f"from basis b group by {', '.join(group)}")


def _basis_columns(tax: Taxonomy, rules: list[SplitRule]) -> tuple[list[str], list[str]]:
    """Line-item columns the weights read: the fields they group or match by, and the measures they sum."""
    group_cols: list[str] = list(_line_fields(tax, rules))
    measures: list[str] = []
    for rule in rules:
        for field in rule.weights.match:
            col = "Tags" if field == "tag" else RULE_FIELDS[field]
            if col not in group_cols:
                group_cols.append(col)
        m = rule.weights.measure
        if m not in ("BilledCost", "EffectiveCost", "ListCost") and m not in measures:
            measures.append(m)
    return group_cols, measures


def basis_extra_columns(tax: Taxonomy, present: set[str]) -> str:
    """The line-item columns the `basis` pieces carry for the weights (a `{extra_columns}` fragment of
    sql/allocation/allocate.sql; `present`: the columns a piece has already), so they need no join back to the
    month's line items."""
    group_cols, measures = _basis_columns(tax, split_order(tax.splits) + spread_rules(tax))
    return "".join(f',\n    li."{c}"' for c in dict.fromkeys([*group_cols, *measures]) if c not in present)


def _check_conflicts(con, rules: list[SplitRule]) -> None:
    """Two rules that take the same line item are a conflict: reject with a line to look at."""
    if len(rules) < 2:
        return
    selects = []
    params: list = []
    for i, rule in enumerate(rules):
        conds = [f"li.m{i}"] + _dimension_conditions(rule.dimensions, "a", params)
        selects.append(f"select {i} as r, a.x_LineId from alloc a join split_lines li using (x_LineId) "
                       f"where {' and '.join(conds)}")
    rows = con.execute(
        "select x_LineId, list(distinct r order by r) from (" + " union all ".join(selects) + ") "
        "group by x_LineId having count(distinct r) > 1 limit 3", params).fetchall()
    for line_id, rs in rows:
        a, b = rules[rs[0]], rules[rs[1]]
        if not (set(a.dimensions) & set(b.by) or set(b.dimensions) & set(a.by)):  # chains are not conflicts
            raise SplitConflictError(f"split rules {a.name!r} and {b.name!r} both match line item {line_id}: "
                                     "make their `match` exclusive")


def _apply(con, tax: Taxonomy, rule: SplitRule, spread: bool, index: int) -> int:
    params: list = []
    conds = _dimension_conditions(rule.dimensions, "a", params)
    conds.append("coalesce(a.x_AllocationRuleId, '') <> ?")
    params.append(rule.name)
    part_cols = [_partition_expr(f, tax, "a", "li") for f in rule.partition_by]
    part_select = ", ".join(f"{e} AS p{i}" for i, e in enumerate(part_cols))
    needs_line = bool(rule.match) or any(f not in tax.dimensions for f in rule.partition_by)
    source = "alloc a join split_lines li using (x_LineId)" if needs_line else "alloc a"
    if rule.match:
        conds.insert(0, f"li.m{index}")
    # The rule's parents stay in DuckDB; only those with weights to split by come to Python. A parent whose partition
    # has none keeps its piece and says so (_mark_skipped): at 50 M rows that was ~2.5 M pieces fetched as tuples of
    # Decimals and sent back (the allocation step's peak memory grew with the month).
    con.execute(
        f"create or replace temp table split_parents as select a.x_LineId, a.x_PieceId, a.BilledCost, a.EffectiveCost, "
        f"a.ListCost{', ' + part_select if part_select else ''} from {source} where {' and '.join(conds)}", params)
    if not con.execute("select count(*) from split_parents").fetchall()[0][0]:
        con.execute("drop table split_parents")
        return 0
    weights = _weights(con, tax, rule, spread)
    n_parts = len(part_cols)
    with_targets = [k for k, v in weights.items() if v]
    con.register("split_parts_arrow", pa.table(
        {f"p{i}": pa.array([k[i] for k in with_targets], pa.string()) for i in range(n_parts)} if n_parts
        else {"p": pa.array([True] * len(with_targets), pa.bool_())}))
    has_targets = "exists (select 1 from split_parts_arrow s where " + (
        " and ".join(f"s.p{i} is not distinct from p.p{i}" for i in range(n_parts)) if n_parts else "true") + ")"
    _mark_skipped(con, rule, f"not {has_targets}")
    parents = con.execute(f"select * from split_parents as p where {has_targets} order by x_LineId, x_PieceId").fetchall()
    con.unregister("split_parts_arrow")
    con.execute("drop table split_parents")
    if not parents:
        return 0
    by_cols = [dimension_column(d) for d in rule.by]
    unit = rule.precision
    rows: dict[str, list] = defaultdict(list)
    for parent in parents:
        line_id, piece_id, billed, effective, listed = parent[:5]
        targets = weights[tuple(parent[5:5 + n_parts])]
        ws = [w for _, w in targets]
        total = sum(ws)
        billed_pieces = split_exact(billed, ws, unit)
        effective_pieces = split_exact(effective, ws, unit)
        list_pieces = split_exact(listed, ws, unit) if listed is not None else [None] * len(ws)
        for i, (values, w) in enumerate(targets):
            ratio = (w / total).quantize(Decimal("0.000000000001"))
            rows["x_LineId"].append(line_id)
            rows["parent_piece"].append(piece_id)
            rows["sub"].append(i)
            for col, v in zip(by_cols, values):
                rows[col].append(v)
            rows["BilledCost"].append(billed_pieces[i])
            rows["EffectiveCost"].append(effective_pieces[i])
            rows["ListCost"].append(list_pieces[i])
            rows["ratio"].append(ratio)
            rows["details"].append(json.dumps({
                "Elements": [{"AllocatedRatio": float(ratio), "UsageQuantity": float(w),
                              "UsageUnit": rule.weights.measure if rule.method in ("proportional", "metric")
                              else ("Share" if rule.method == "fixed" else "Target")}],
                "x_SplitRule": rule.name, "x_Method": rule.method,
            }))
    if not rows:
        return 0
    money = pa.decimal128(38, 12)
    schema = [("x_LineId", pa.int64()), ("parent_piece", pa.int64()), ("sub", pa.int64())]
    schema += [(c, pa.string()) for c in by_cols]
    schema += [("BilledCost", money), ("EffectiveCost", money), ("ListCost", money), ("ratio", money),
               ("details", pa.string())]
    table = pa.Table.from_pydict({k: rows[k] for k, _ in schema}, schema=pa.schema(schema))
    con.register("split_pieces_arrow", table)
    reason_kind = "spread" if spread else "split"
    replace = [
        "s.BilledCost AS BilledCost", "s.EffectiveCost AS EffectiveCost", "s.ListCost AS ListCost",
        "CAST(a.x_AllocatedRatio * s.ratio AS DECIMAL(38, 12)) AS x_AllocatedRatio",
        "CAST(? AS VARCHAR) AS x_AllocationRuleId",
        "CAST(s.details AS JSON) AS x_AllocationMethodDetails",
        "a.x_PieceId * 100000 + s.sub AS x_PieceId",
    ]
    rparams: list = [rule.name]
    for col in by_cols:
        replace.append(f"s.{col} AS {col}")
        replace.append(f"? || ' (' || CAST(CAST(s.ratio AS DOUBLE) AS VARCHAR) || ' of ' || "
                       f"coalesce(a.{col}Reason, '') || ')' AS {col}Reason")
        rparams.append(f"{reason_kind}:{rule.name} {rule.method}")
    con.execute(
        "create or replace temp table split_new as select a.* replace ("
        + ", ".join(replace)
        + ") from alloc a join split_pieces_arrow s on s.x_LineId = a.x_LineId and s.parent_piece = a.x_PieceId",
        rparams,
    )
    con.execute("delete from alloc where (x_LineId, x_PieceId) in (select x_LineId, parent_piece from split_pieces_arrow)")
    con.execute("insert into alloc by name select * from split_new")
    con.unregister("split_pieces_arrow")
    return len(rows["x_LineId"])


def _mark_skipped(con, rule: SplitRule, no_targets: str) -> None:
    """No weights for the parent's partition (`no_targets`, a condition on split_parents `p`): the piece stays as it
    was, and says so."""
    col = dimension_column(rule.by[0])
    con.execute(
        f"update alloc set {col}Reason = {col}Reason || ? from split_parents p "
        f"where alloc.x_LineId = p.x_LineId and alloc.x_PieceId = p.x_PieceId and {no_targets}",
        [f" | split:{rule.name} skipped: nothing to split by"],
    ).fetchall()  # the update's row count: read, so the connection takes the next statement


def _weights(con, tax: Taxonomy, rule: SplitRule, spread: bool) -> dict[tuple, list[tuple[tuple, Decimal]]]:
    """partition values -> [(target values, weight)], targets in a stable order."""
    by_cols = [dimension_column(d) for d in rule.by]
    if rule.method in ("even", "fixed"):
        items = [((t,), Decimal(1)) for t in rule.targets] if rule.method == "even" else \
                [((t,), Decimal(str(p))) for t, p in rule.shares.items()]
        if rule.partition_by:
            parts = con.execute(
                "select distinct " + ", ".join(_partition_expr(f, tax, "a", "li") for f in rule.partition_by)
                + " from alloc a join month_line_items li using (x_LineId)").fetchall()
            return {tuple(p): items for p in parts}
        return {(): items}
    measure = rule.weights.measure
    if measure not in MEASURES and measure not in ("BilledCost", "EffectiveCost", "ListCost"):
        raise ValueError(f"split {rule.name!r}: measure {measure!r} is not a numeric line-item column")
    measure_expr = f'bl."{measure}"'
    params: list = []
    conds = _conditions(rule.weights.match, "bl", params)
    include_untagged = rule.weights.include_untagged
    if include_untagged is None:
        include_untagged = rule.method == "metric"
    excluded = [SHARED] if include_untagged else [UNTAGGED, SHARED]
    for col in by_cols:
        conds.append(f"bl.{col} not in ({', '.join(repr(v) for v in excluded)})")
    if rule.weights.sources:
        conds.append("list_contains(?, bl.x_SourceName)")
        params.append(rule.weights.sources)
    if rule.targets:
        conds.append(f"list_contains(?, bl.{by_cols[0]})")
        params.append(rule.targets)
    part_exprs = [_partition_expr(f, tax, "bl", "bl") for f in rule.partition_by]
    group = part_exprs + [f"bl.{c}" for c in by_cols]
    rows = con.execute(
        f"select {', '.join(group)}, sum(CAST({measure_expr} AS DECIMAL(38, 12))) as w "
        "from basis_flat bl "
        f"where {' and '.join(conds) or 'true'} group by all having sum({measure_expr}) > 0 "
        f"order by {', '.join(str(i + 1) for i in range(len(group)))}", params).fetchall()
    out: dict[tuple, list] = defaultdict(list)
    n = len(part_exprs)
    for r in rows:
        out[tuple(r[:n])].append((tuple(r[n:n + len(by_cols)]), Decimal(r[-1])))
    return out


def _renumber(con, tax: Taxonomy) -> None:
    """Pieces of split lines are numbered 1..n again (only those lines: a month-wide sort is costly)."""
    con.execute(
        "update alloc set x_PieceId = r.n from ("
        "  select x_LineId, x_PieceId, row_number() over (partition by x_LineId order by x_PieceId) as n"
        "  from alloc where x_LineId in (select x_LineId from alloc where x_AllocationRuleId is not null)"
        ") as r where alloc.x_LineId = r.x_LineId and alloc.x_PieceId = r.x_PieceId"
    )


def reason_expression(tax: Taxonomy) -> str:
    """x_AllocationReason from the per-dimension reasons (applied when the pieces are written)."""
    return " || '; ' || ".join(f"'{d}=' || {dimension_column(d)}Reason" for d in tax.dimension_names)
