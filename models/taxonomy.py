"""The tag taxonomy: how tags, rules and account mappings decide project, team and workload.

Per dimension, the allocator decides a value in this order, and records which step decided it:

1. `keys` — the first tag key present on the line item (case-insensitive, in priority order)
   whose value, after `normalize` and `aliases`, is an `allowed` value. A value that is not
   allowed is rejected (and named in the reason), never silently accepted.
2. `rules` — ordered first-match rules over line-item fields (account, service, resource id,
   region, tag, ...). Patterns are globs (`*`, `?`), matched case-insensitively on the whole value.
3. `accounts` — a fixed value per (sub-)account id.
4. `default` — a fixed value, if set.
5. Otherwise the line is `shared` when no resource can own it (tax, credits, support, commitment
   fees) and `untagged` when it could have been tagged.

The taxonomy is turned into small tables (`taxonomy_tables`) that the allocation SQL joins:
tag keys and values stay data and are never pasted into SQL text.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from apportion.models._yaml import ConfigError, LocatedProblems, load_yaml_with_lines, problems_from_validation
from apportion.models.focus import CORE_DIMENSIONS, SHARED, UNTAGGED

DIMENSION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
NORMALIZERS = ("trim", "lower", "slug")

# Rule match field -> line-item column. The column names are ours; the patterns are data.
RULE_FIELDS: dict[str, str] = {
    "account": "SubAccountId",
    "account_name": "SubAccountName",
    "billing_account": "BillingAccountId",
    "provider": "ProviderName",
    "service": "ServiceName",
    "service_code": "x_ServiceCode",
    "service_category": "ServiceCategory",
    "resource_id": "ResourceId",
    "region": "RegionId",
    "charge_category": "ChargeCategory",
    "usage_type": "x_UsageType",
    "operation": "x_Operation",
    "instance_type": "x_InstanceType",
    "line_item_type": "x_LineItemType",
    "sku": "SkuId",
    "cost_basis": "x_CostBasis",
    "model": "x_ModelId",
    "llm_provider": "x_LlmProvider",
    "token_type": "x_TokenType",
    "gpu_model": "x_GpuModel",
    "cluster": "x_Cluster",
    "node": "x_Node",
    "job": "x_JobId",
    "source": "x_SourceName",
}


def glob_to_regex(pattern: str) -> str:
    """Case-insensitive full-match RE2 regex for a glob (`*` any run, `?` one character)."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return "(?is)" + "".join(out)


def normalise_value(raw: str, steps: list[str]) -> str:
    """Python twin of the SQL normalisation (used for aliases and in tests)."""
    v = raw
    if "trim" in steps:
        v = v.strip()
    if "lower" in steps:
        v = v.lower()
    if "slug" in steps:
        v = re.sub(r"[\s_]+", "-", v)
    return v


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    match: dict[str, Any] = Field(description="field -> glob; `tag` takes a mapping of tag key -> glob.")
    value: str
    override: bool = Field(False, description="Virtual tag: decide before the line's own tags (overrides them).")

    @field_validator("match")
    @classmethod
    def _fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_match(v)


def validate_match(v: dict[str, Any], allow_empty: bool = False) -> dict[str, Any]:
    """Check a `match:` mapping (field -> glob, `tag` -> {key: glob}); return it with string patterns."""
    if not v:
        if allow_empty:
            return v
        raise ValueError("a rule needs at least one condition (use `default` to match everything)")
    for field, pattern in v.items():
        if field == "tag":
            if not isinstance(pattern, dict) or not pattern:
                raise ValueError("`tag` takes a mapping of tag key -> glob, e.g. {environment: prod}")
            for k, p in pattern.items():
                if not isinstance(p, (str, int)):
                    raise ValueError(f"tag {k!r}: pattern must be a string")
        elif field not in RULE_FIELDS:
            raise ValueError(f"unknown match field {field!r} (known: tag, {', '.join(RULE_FIELDS)})")
        elif not isinstance(pattern, (str, int)):
            raise ValueError(f"{field}: pattern must be a string")
    return {k: ({tk: str(tv) for tk, tv in p.items()} if k == "tag" else str(p)) for k, p in v.items()}


class SplitWeights(BaseModel):
    """Which line items of the month weigh the split, and by what measure."""

    model_config = ConfigDict(extra="forbid")

    match: dict[str, Any] = Field(default_factory=dict, description="Filter over the month's line items (rule syntax).")
    sources: list[str] = Field(default_factory=list, description="Only these sources (default: all).")
    measure: str = Field("EffectiveCost", description="Numeric line-item column summed per target.")
    include_untagged: bool | None = Field(
        None, description="Let usage with no owner keep its share as untagged (default: yes for metric, "
        "no for proportional, which shares over known values only).")

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_match(v, allow_empty=True)


class SplitRule(BaseModel):
    """Shares one kind of cost (tax, support, a platform account...) across targets, exactly.

    even: equal shares of `targets`; fixed: `shares` in percent (total 100); proportional: the targets'
    own spend (`weights.measure`, default EffectiveCost) over `weights.match`; metric: any usage measure
    (tokens, GPU-hours, requests, x_PricedCost...) of `weights`. `by` are the dimensions the pieces
    receive from their target; `partition_by` computes the weights separately per value of the parent's
    field (e.g. environment).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    match: dict[str, Any] = Field(default_factory=dict, description="Line items to split (rule syntax).")
    dimensions: dict[str, str] = Field(default_factory=dict, description="...and their decided values, e.g. {team: shared}.")
    method: str
    by: list[str] = Field(default_factory=lambda: ["team"])
    targets: list[str] = Field(default_factory=list, description="Values of by[0] to split over.")
    shares: dict[str, Decimal] = Field(default_factory=dict, description="fixed: value of by[0] -> percent.")
    weights: SplitWeights = Field(default_factory=SplitWeights)
    partition_by: list[str] = Field(default_factory=list)
    precision: Decimal = Field(Decimal("0.000000000001"), description="Smallest piece unit, e.g. 0.01.")

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_match(v, allow_empty=True)

    @model_validator(mode="after")
    def _method(self) -> "SplitRule":
        if self.method not in SPLIT_METHODS:
            raise ValueError(f"method {self.method!r} must be one of {', '.join(SPLIT_METHODS)}")
        if not self.match and not self.dimensions:
            raise ValueError("a split needs `match` or `dimensions` to say which line items it splits")
        if not self.by:
            raise ValueError("`by` names at least one dimension")
        if self.method == "fixed":
            if not self.shares:
                raise ValueError("method fixed needs `shares`")
            total = sum(self.shares.values())
            if total != 100:
                raise ValueError(f"fixed shares must total 100, not {total}")
            if any(v < 0 for v in self.shares.values()):
                raise ValueError("fixed shares must not be negative")
        if self.method == "even" and not self.targets:
            raise ValueError("method even needs `targets`")
        if self.method in ("even", "fixed") and len(self.by) != 1:
            raise ValueError(f"method {self.method} splits over one dimension: `by` must have one entry")
        if self.method == "metric" and self.weights.measure == "EffectiveCost" and not self.weights.match:
            raise ValueError("method metric needs `weights` with a `measure` (e.g. x_GpuHours) and usually a `match`")
        if self.precision <= 0:
            raise ValueError("precision must be positive")
        return self


SPLIT_METHODS = ("even", "fixed", "proportional", "metric")


class Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(default_factory=list, description="Tag keys in priority order (case-insensitive).")
    normalize: list[str] = Field(default_factory=lambda: list(NORMALIZERS))
    aliases: dict[str, list[str]] = Field(default_factory=dict, description="canonical value -> variants.")
    allowed: list[str] = Field(default_factory=list, description="Allowed values; empty means any value.")
    accounts: dict[str, str] = Field(default_factory=dict, description="account id -> value.")
    rules: list[Rule] = Field(default_factory=list)
    default: str | None = None
    workload_classes: dict[str, str] = Field(
        default_factory=dict, description="workload value -> this dimension's value (for value_class).")
    spread_untagged: bool = Field(False, description="Spread untagged spend over known values by their spend, marked.")

    @field_validator("normalize")
    @classmethod
    def _norm(cls, v: list[str]) -> list[str]:
        for step in v:
            if step not in NORMALIZERS:
                raise ValueError(f"unknown normalisation {step!r} (known: {', '.join(NORMALIZERS)})")
        return v

    @field_validator("accounts", mode="before")
    @classmethod
    def _account_ids(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise ValueError(
                        f"account id {k!r} must be quoted: ids are strings and YAML would drop leading zeros"
                    )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Dimension":
        allowed = set(self.allowed)
        problems = []

        def check(value: str, what: str) -> None:
            if allowed and value not in allowed:
                problems.append(f"{what} {value!r} is not in allowed")
            if value in (UNTAGGED, SHARED):
                problems.append(f"{what} {value!r} is reserved for unattributed spend")

        for canonical in self.aliases:
            check(canonical, "alias target")
        for acct, value in self.accounts.items():
            check(value, f"accounts[{acct}] value")
        for rule in self.rules:
            check(rule.value, f"rule {rule.name!r} value")
        for workload, value in self.workload_classes.items():
            check(value, f"workload_classes[{workload}] value")
        if self.default is not None:
            check(self.default, "default")
        seen: dict[str, str] = {}
        for canonical, variants in self.aliases.items():
            for variant in variants:
                key = normalise_value(str(variant), self.normalize)
                if key in seen and seen[key] != canonical:
                    problems.append(
                        f"alias {variant!r} maps to both {seen[key]!r} and {canonical!r} after normalisation"
                    )
                seen[key] = canonical
        names = [r.name for r in self.rules]
        for name in {n for n in names if names.count(n) > 1}:
            problems.append(f"rule name {name!r} is used twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    dimensions: dict[str, Dimension]
    splits: list[SplitRule] = Field(default_factory=list)

    @field_validator("dimensions", mode="before")
    @classmethod
    def _dims(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for name in v:
            if not DIMENSION_NAME.match(name):
                raise ValueError(f"dimension name {name!r} must be lower_snake_case")
        return v

    @model_validator(mode="after")
    def _core_dimensions(self) -> "Taxonomy":
        missing = [d for d in CORE_DIMENSIONS if d not in self.dimensions]
        if missing:
            raise ValueError(f"missing dimension(s) {', '.join(missing)}: project, team and workload are required")
        problems: list[tuple[tuple, str]] = []
        names = [s.name for s in self.splits]
        for i, split in enumerate(self.splits):
            at = ("splits", i)
            if names.count(split.name) > 1 and names.index(split.name) != i:
                problems.append((at + ("name",), f"split name {split.name!r} is used twice"))
            for j, d in enumerate(split.by):
                if d not in self.dimensions:
                    problems.append((at + ("by", j), f"split {split.name!r}: unknown dimension {d!r}"))
            for d in split.dimensions:
                if d not in self.dimensions:
                    problems.append((at + ("dimensions", d), f"split {split.name!r}: unknown dimension {d!r}"))
            for j, f in enumerate(split.partition_by):
                if f not in RULE_FIELDS and f not in self.dimensions:
                    problems.append((at + ("partition_by", j), f"split {split.name!r}: cannot partition by {f!r}"))
            dim = self.dimensions.get(split.by[0]) if split.by else None
            if dim and dim.allowed:
                for j, value in enumerate(split.targets):
                    if value not in dim.allowed:
                        problems.append((at + ("targets", j),
                                         f"split {split.name!r}: target {value!r} is not an allowed {split.by[0]}"))
                for value in split.shares:
                    if value not in dim.allowed:
                        problems.append((at + ("shares", value),
                                         f"split {split.name!r}: target {value!r} is not an allowed {split.by[0]}"))
        for name, d in self.dimensions.items():
            if d.workload_classes and name == "workload":
                problems.append((("dimensions", name, "workload_classes"),
                                 "workload_classes belongs on the value-class dimension, not on workload"))
        problems.extend((("splits",), p) for p in split_cycles(self.splits))
        if problems:
            raise LocatedProblems(problems)
        return self

    @property
    def dimension_names(self) -> list[str]:
        """Core dimensions first, then extra ones in file order."""
        return list(CORE_DIMENSIONS) + [d for d in self.dimensions if d not in CORE_DIMENSIONS]

    def rule_fields(self) -> set[str]:
        return {f for d in self.dimensions.values() for r in d.rules for f in r.match if f != "tag"}


def feeds(a: SplitRule, b: SplitRule) -> bool:
    """True when pieces made by `a` can be lines that `b` splits (a's targets match b's `dimensions`)."""
    for dim, pattern in b.dimensions.items():
        if dim in a.by:
            values = a.targets or list(a.shares) or ["*"]
            rx = re.compile(glob_to_regex(pattern))
            if any(v == "*" or rx.fullmatch(v) for v in values):
                return True
    return False


def split_cycles(splits: list[SplitRule]) -> list[str]:
    """A split whose targets are split again by a rule that feeds back into it can never finish."""
    edges = {a.name: [b.name for b in splits if b is not a and feeds(a, b)] for a in splits}
    problems, state = [], {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in edges[n]:
            if state.get(m) == 1:
                problems.append("split rules form a cycle: " + " -> ".join(path[path.index(m):] + [n, m]
                                                                           if m in path else path + [n, m]))
            elif not state.get(m):
                visit(m, path + [n])
        state[n] = 2

    for s in splits:
        if not state.get(s.name):
            visit(s.name, [])
    return sorted(set(problems))


def split_order(splits: list[SplitRule]) -> list[SplitRule]:
    """Rules whose pieces feed another rule run first (the graph is acyclic after validation)."""
    order: list[SplitRule] = []
    remaining = list(splits)
    while remaining:
        for s in remaining:
            if not [o for o in remaining if o is not s and feeds(o, s)]:
                order.append(s)
                remaining.remove(s)
                break
        else:  # only reachable with a cycle, which validation rejects
            order.extend(remaining)
            break
    return order


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read and validate a taxonomy file; raise ConfigError pointing at the offending lines."""
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ConfigError(path, ["line 1: a taxonomy is a mapping with `dimensions:`"])
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, problems_from_validation(exc, lines)) from None


def taxonomy_tables(tax: Taxonomy) -> dict[str, pa.Table]:
    """The taxonomy as relational tables for the allocation SQL."""
    dims, keys, aliases, allowed, accounts, conds = [], [], [], [], [], []
    for ord_, name in enumerate(tax.dimension_names):
        d = tax.dimensions[name]
        dims.append(
            {
                "dimension": name,
                "ord": ord_,
                "do_trim": "trim" in d.normalize,
                "do_lower": "lower" in d.normalize,
                "do_slug": "slug" in d.normalize,
                "has_allowed": bool(d.allowed),
                "default_value": d.default,
            }
        )
        for prio, key in enumerate(d.keys):
            keys.append({"dimension": name, "key_lower": key.strip().lower(), "priority": prio})
        for canonical, variants in d.aliases.items():
            for variant in [canonical, *variants]:
                aliases.append(
                    {"dimension": name, "variant": normalise_value(str(variant), d.normalize), "value": canonical}
                )
        for value in d.allowed:
            allowed.append({"dimension": name, "value": value})
        for acct, value in d.accounts.items():
            accounts.append({"dimension": name, "account_id": acct, "value": value})
        for rule_ord, rule in enumerate(d.rules):
            for field, pattern in rule.match.items():
                pairs = pattern.items() if field == "tag" else [(None, pattern)]
                for tag_key, glob in pairs:
                    conds.append(
                        {
                            "dimension": name,
                            "rule_order": rule_ord,
                            "rule_name": rule.name,
                            "value": rule.value,
                            "override": rule.override,
                            "field": field,
                            "tag_key": tag_key.strip().lower() if tag_key else None,
                            "regex": glob_to_regex(glob),
                        }
                    )
    schemas = {
        "tax_dimensions": pa.schema(
            [("dimension", pa.string()), ("ord", pa.int32()), ("do_trim", pa.bool_()), ("do_lower", pa.bool_()),
             ("do_slug", pa.bool_()), ("has_allowed", pa.bool_()), ("default_value", pa.string())]
        ),
        "tax_keys": pa.schema([("dimension", pa.string()), ("key_lower", pa.string()), ("priority", pa.int32())]),
        "tax_aliases": pa.schema([("dimension", pa.string()), ("variant", pa.string()), ("value", pa.string())]),
        "tax_allowed": pa.schema([("dimension", pa.string()), ("value", pa.string())]),
        "tax_accounts": pa.schema([("dimension", pa.string()), ("account_id", pa.string()), ("value", pa.string())]),
        "tax_rule_conditions": pa.schema(
            [("dimension", pa.string()), ("rule_order", pa.int32()), ("rule_name", pa.string()), ("value", pa.string()),
             ("override", pa.bool_()), ("field", pa.string()), ("tag_key", pa.string()), ("regex", pa.string())]
        ),
    }
    rows = {"tax_dimensions": dims, "tax_keys": keys, "tax_aliases": aliases, "tax_allowed": allowed,
            "tax_accounts": accounts, "tax_rule_conditions": conds}
    return {name: pa.Table.from_pylist(rows[name], schema=schemas[name]) for name in schemas}
