"""LiteLLM proxy spend logs (`kind: litellm`), from its PostgreSQL database or from CSV exports.

* `uri: postgresql://user@host:5432/litellm` (or the `dsn_env` option naming an environment variable
  that holds the connection string): landing runs one query per billing month on `"LiteLLM_SpendLogs"`
  (`"startTime"` in the month, UTC) and lands the rows as the server's own CSV (`COPY ... TO STDOUT`).
  Prompt and response columns (`messages`, `response`, `proxy_server_request`) are never read.
  Passwords come from the environment (PGPASSWORD, ~/.pgpass, or the `dsn_env` variable), never the uri.
* `uri: s3://bucket/prefix`, `file:///dir` or a path: every `*.csv` / `*.csv.gz` below it is one delivery
  (a table export with the `LiteLLM_SpendLogs` column names; headers are matched ignoring case, spaces and
  underscores). Rows of other months are skipped, not quarantined.

Each request is one record: `model` (priced with `custom_llm_provider` as the provider, e.g. bedrock -> AWS),
`prompt_tokens` (OpenAI convention: includes cached tokens), `completion_tokens`, and from
`metadata.usage_object` the cache reads (`cache_read_input_tokens` or `prompt_tokens_details.cached_tokens`)
and cache writes (`cache_creation_input_tokens`, split 5m/1h when the provider reported it). LiteLLM's own
`spend` is not used (it is known to miss cache pricing and unmapped models); tokens are priced by
models/prices.py. Records are summed per day x model x team x key x user x tags.

Attribution: SubAccountId = team_id (SubAccountName = team alias), ResourceId = key alias (or hashed key);
Tags = team, key_alias, user, end_user, model_group, then `metadata.spend_logs_metadata` and
`request_tags` ("key:value" or "key=value" entries; bare tags are listed under `request_tags`).

Options: start_month, dsn_env, connect_timeout, price_overrides, deployments, inference_profiles.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from apportion.connectors.base import Delivery, DeliveryPlan, SourceError
from apportion.connectors.llm import (
    Aggregator,
    LlmConnector,
    UsageRecord,
    as_count,
    configured_months,
    land_pages,
    month_bounds,
    usage_rows,
    utc_day,
)
from apportion.models.prices import PREFIX_PROVIDERS, PriceBook, split_input

TABLE = "LiteLLM_SpendLogs"
# Columns landed from the database (those present in the installed LiteLLM version); never prompts/responses.
COLUMNS = ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
           "startTime", "endTime", "model", "model_id", "model_group", "custom_llm_provider", "api_base", "user",
           "metadata", "cache_hit", "request_tags", "team_id", "organization_id", "end_user", "status", "session_id")
CSV_SUFFIXES = (".csv", ".csv.gz")


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def _json(text, default):
    if text is None or (isinstance(text, str) and not text.strip()):
        return default, None
    if isinstance(text, (dict, list)):
        return text, None
    try:
        return json.loads(text), None
    except (json.JSONDecodeError, TypeError):
        return None, "malformed"


def _is_db(uri: str) -> bool:
    return urlparse(uri).scheme in ("postgresql", "postgres")


class LiteLLMConnector(LlmConnector):
    kind = "litellm"

    # ------------------------------------------------------------------ months / landing
    def months(self) -> list[str]:
        return configured_months(self.source.options)

    def plan(self, month: str) -> DeliveryPlan:
        objects, _ = self.store.list("")
        files = [o for o in objects if o.key.lower().endswith(CSV_SUFFIXES)]
        if not files:
            raise SourceError(f"no LiteLLM spend-log CSV exports (*.csv, *.csv.gz) under {self.source.uri}")
        import hashlib

        h = hashlib.sha1("".join(f"{o.key}\0{o.etag}\0" for o in sorted(files, key=lambda o: o.key)).encode())
        return DeliveryPlan(month, "csv-" + h.hexdigest()[:16], files, None, "litellm-csv")

    def land(self, month: str, raw_root: Path) -> Delivery:
        if not _is_db(self.source.uri):
            return super().land(month, raw_root)
        return land_pages(self, month, raw_root, {f"{TABLE}/{month}.csv": self._query_month(month)}, "litellm-postgres")

    def _conninfo(self) -> str:
        env = self.source.options.get("dsn_env")
        if env:
            dsn = os.environ.get(str(env), "")
            if not dsn:
                raise SourceError(f"{self.source.name}: environment variable {env} is not set")
            return dsn
        if urlparse(self.source.uri).password:
            raise SourceError(f"{self.source.name}: the uri must not contain a password; use PGPASSWORD, "
                              "~/.pgpass or the dsn_env option")
        return self.source.uri

    def _query_month(self, month: str) -> bytes:
        import psycopg
        from psycopg import sql

        dsn = self._conninfo()
        start, end = month_bounds(month)
        secret = urlparse(dsn).password or ""
        attempts = int(self.source.options.get("max_retries", 3)) + 1
        last = ""
        for attempt in range(attempts):
            try:
                with psycopg.connect(dsn, connect_timeout=int(self.source.options.get("connect_timeout", 10)),
                                     autocommit=True) as con:
                    present = {r[0] for r in con.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [TABLE])}
                    if not present:
                        raise SourceError(f"{self.source.name}: table \"{TABLE}\" not found in the database")
                    missing = {"startTime", "model", "prompt_tokens", "completion_tokens"} - present
                    if missing:
                        raise SourceError(f"{self.source.name}: \"{TABLE}\" lacks column(s) {', '.join(sorted(missing))}")
                    cols = [c for c in COLUMNS if c in present]
                    query = sql.SQL(
                        "COPY (SELECT {cols} FROM {table} WHERE {ts} >= {start} AND {ts} < {end} "
                        "ORDER BY {ts}, {rid}) TO STDOUT WITH (FORMAT csv, HEADER true)"
                    ).format(cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols), table=sql.Identifier(TABLE),
                             ts=sql.Identifier("startTime"), start=sql.Literal(start.isoformat()),
                             end=sql.Literal(end.isoformat()),
                             rid=sql.Identifier("request_id" if "request_id" in present else "startTime"))
                    buf = io.BytesIO()
                    with con.cursor().copy(query) as copy:
                        for chunk in copy:
                            buf.write(chunk)
                    return buf.getvalue()
            except psycopg.OperationalError as exc:
                last = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                if secret:
                    last = last.replace(secret, "***")
                if attempt + 1 < attempts:
                    time.sleep(float(self.source.options.get("retry_backoff", 1.0)) * 2 ** attempt)
            except psycopg.Error as exc:
                msg = str(exc).strip().splitlines()[0][:300]
                raise SourceError(f"{self.source.name}: reading \"{TABLE}\" failed: "
                                  + (msg.replace(secret, "***") if secret else msg)) from None
        raise SourceError(f"{self.source.name}: cannot reach the LiteLLM database after {attempts} attempts "
                          f"({last}); the month is not built")

    # ------------------------------------------------------------------ staging
    def staged_rows(self, delivery: Delivery, book: PriceBook) -> Iterable[dict]:
        start, end = month_bounds(delivery.month)
        agg = Aggregator()
        for key, path in sorted(delivery.files):
            for row_no, row in self._read_csv(key, path):
                rec = self._record(key, row_no, row)
                if rec.day is not None and not (start <= rec.day < end):
                    continue  # another month's request
                agg.add(rec)
        for rec in agg.records():
            yield from usage_rows(rec, book, delivery.month)

    def _read_csv(self, key: str, path: Path):
        csv.field_size_limit(1 << 26)
        try:
            raw = path.read_bytes()
            if path.name.lower().endswith(".gz"):
                raw = gzip.decompress(raw)
            text = raw.decode("utf-8-sig")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
            raise SourceError(f"cannot read {key}: {exc}", file=key) from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if not header:
            return
        names = [_norm(h) for h in header]
        if "starttime" not in names or "model" not in names:
            raise SourceError(f"{key} is not a LiteLLM spend-log export (no startTime / model column)", file=key)
        for i, values in enumerate(reader, start=1):
            yield i, dict(zip(names, values))

    def _record(self, key: str, row_no: int, r: dict) -> UsageRecord:
        provider = PREFIX_PROVIDERS.get((r.get("customllmprovider") or "").strip().lower())
        model = (r.get("model") or "").strip() or (r.get("modelgroup") or "").strip()
        metadata, bad_meta = _json(r.get("metadata"), {})
        tags_list, bad_tags = _json(r.get("requesttags"), [])
        team_id = (r.get("teamid") or "").strip() or None
        rec = UsageRecord(file=key, row=row_no, day=utc_day(r.get("starttime")), provider=provider, model_ref=model,
                          operation=(r.get("calltype") or "").strip() or None, requests=1,
                          billing_account_id=(r.get("organizationid") or "").strip() or "litellm-proxy",
                          sub_account_id=team_id or "no-team", sub_account_type="Team")
        if bad_meta or not isinstance(metadata, dict):
            rec.quarantine = "malformed metadata JSON"
            return rec
        if bad_tags or not isinstance(tags_list, (list, dict)):
            rec.quarantine = "malformed request_tags JSON"
            return rec
        team_alias = metadata.get("user_api_key_team_alias")
        key_alias = metadata.get("user_api_key_alias")
        rec.sub_account_name = team_alias
        rec.resource_id = key_alias or (r.get("apikey") or "").strip() or None
        rec.resource_type = "Virtual Key" if rec.resource_id else None
        tags = {"team": team_alias or team_id, "key_alias": key_alias, "user": (r.get("user") or "").strip() or None,
                "end_user": (r.get("enduser") or "").strip() or None,
                "model_group": (r.get("modelgroup") or "").strip() or None}
        extra = metadata.get("spend_logs_metadata")
        if isinstance(extra, dict):
            tags.update({str(k): v for k, v in extra.items() if isinstance(v, (str, int, float, bool))})
        bare = []
        for t in tags_list.items() if isinstance(tags_list, dict) else tags_list:
            if isinstance(t, tuple):
                tags[str(t[0])] = t[1]
                continue
            m = re.match(r"^\s*([^:=]+?)\s*[:=]\s*(.+?)\s*$", str(t))
            if m:
                tags[m.group(1)] = m.group(2)
            elif str(t).strip():
                bare.append(str(t).strip())
        if bare:
            tags["request_tags"] = ",".join(bare)
        rec.tags = tags
        usage = metadata.get("usage_object") if isinstance(metadata.get("usage_object"), dict) else {}
        try:
            prompt = as_count(r.get("prompttokens")) or 0
            completion = as_count(r.get("completiontokens")) or 0
            details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
            cache_read = as_count(usage.get("cache_read_input_tokens")) or as_count(details.get("cached_tokens")) or 0
            cache_write = as_count(usage.get("cache_creation_input_tokens")) or 0
            split = usage.get("cache_creation") or usage.get("cache_creation_token_details") or {}
            long_ttl = as_count(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else None
        except ValueError as exc:
            rec.quarantine = f"invalid token count {exc}"
            return rec
        long_ttl = min(long_ttl or 0, cache_write)
        rec.tokens = {"input": split_input(prompt, cache_read, cache_write, inclusive=True),
                      "cache_read": cache_read, "cache_write_5m": cache_write - long_ttl,
                      "cache_write_1h": long_ttl, "output": completion}
        if not model:
            rec.quarantine = "no model name"
        return rec
