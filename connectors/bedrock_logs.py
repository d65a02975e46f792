"""Amazon Bedrock model-invocation logs delivered to S3 (`kind: bedrock_logs`).

`uri` is the logging destination (`s3://bucket/prefix`, also file:// or a path). Bedrock writes
`<prefix>/AWSLogs/<account>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/*.json.gz`; each file holds
one JSON record per line (a file holding one record or a JSON array is read too). A month's delivery is
every `.json` / `.json.gz` object whose `YYYY/MM/DD` path is in the month (large bodies spilled under a
`data/` folder are not invocation records and are skipped).

Per record: `timestamp`, `accountId` (SubAccountId), `region`, `identity.arn` (ResourceId: the IAM
principal), `modelId` (foundation model id, cross-region profile `us.`/`eu.`/`global.`, or an ARN;
application inference profiles are mapped to models with the `inference_profiles` option),
`requestMetadata` (caller key/values -> Tags), `input.inputTokenCount` (uncached: Bedrock follows the
Anthropic convention), `input.cacheReadInputTokenCount`, `input.cacheWriteInputTokenCount` (split 5m / 1h
when `output.outputBodyJson.usage.cache_creation` has it), `output.outputTokenCount`. Records are summed
per day x model x account x principal x region x tags; the bill (CUR Bedrock lines) stays the invoice.

Options: endpoint_url, region (S3), inference_profiles, price_overrides, principal_tags (default true: adds
`principal` = role or user name to the tags).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from apportion.connectors.base import Delivery, DeliveryPlan, SourceError
from apportion.connectors.llm import Aggregator, LlmConnector, UsageRecord, as_count, month_bounds, usage_rows, utc_day
from apportion.models.prices import PriceBook

DATE_PATH = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/")
SUFFIXES = (".json", ".json.gz")


def _principal(arn: str | None) -> str | None:
    if not arn:
        return None
    tail = arn.rsplit(":", 1)[-1]
    parts = tail.split("/")
    if parts[0] == "assumed-role" and len(parts) >= 2:
        return parts[1]
    return parts[-1] if len(parts) > 1 else tail


class BedrockLogsConnector(LlmConnector):
    kind = "bedrock_logs"

    def _logs(self) -> list:
        objects, _ = self.store.list("")
        return [o for o in objects if o.key.lower().endswith(SUFFIXES) and "/data/" not in f"/{o.key}"
                and DATE_PATH.search(o.key)]

    def months(self) -> list[str]:
        return sorted({f"{m.group(1)}-{m.group(2)}" for o in self._logs() if (m := DATE_PATH.search(o.key))})

    def plan(self, month: str) -> DeliveryPlan:
        files = [o for o in self._logs() if (m := DATE_PATH.search(o.key)) and f"{m.group(1)}-{m.group(2)}" == month]
        if not files:
            raise SourceError(f"no Bedrock invocation logs for {month} under {self.source.uri}")
        h = hashlib.sha1("".join(f"{o.key}\0{o.etag}\0" for o in sorted(files, key=lambda o: o.key)).encode())
        return DeliveryPlan(month, "logs-" + h.hexdigest()[:16], files, None, "bedrock-invocation-logs")

    # ------------------------------------------------------------------ staging
    def staged_rows(self, delivery: Delivery, book: PriceBook) -> Iterable[dict]:
        start, end = month_bounds(delivery.month)
        agg = Aggregator()
        for key, path in sorted(delivery.files):
            for row_no, record, problem in self._records(key, path):
                rec = self._record(key, row_no, record, problem)
                if rec.day is not None and not (start <= rec.day < end) and rec.quarantine is None:
                    rec.quarantine = f"invocation on {rec.day.isoformat()} logged under {delivery.month}"
                agg.add(rec)
        for rec in agg.records():
            yield from usage_rows(rec, book, delivery.month)

    def _records(self, key: str, path: Path) -> Iterator[tuple[int, Any, str | None]]:
        try:
            raw = path.read_bytes()
            if path.name.lower().endswith(".gz"):
                raw = gzip.decompress(raw)
            text = raw.decode("utf-8-sig")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
            raise SourceError(f"cannot read {key}: {exc}", file=key) from None
        stripped = text.strip()
        if stripped.startswith("[") or (stripped.startswith("{") and "\n" not in stripped):
            try:
                doc = json.loads(stripped)
                for i, r in enumerate(doc if isinstance(doc, list) else [doc], start=1):
                    yield i, r, None
                return
            except json.JSONDecodeError:
                pass
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield i, None, f"malformed JSON record ({exc.msg})"

    def _record(self, key: str, row_no: int, r: Any, problem: str | None) -> UsageRecord:
        rec = UsageRecord(file=key, row=row_no, day=None, provider="aws", model_ref=None, requests=1,
                          service_name="Amazon Bedrock")
        if problem or not isinstance(r, dict):
            rec.quarantine = problem or "record is not a JSON object"
            return rec
        identity = r.get("identity") if isinstance(r.get("identity"), dict) else {}
        arn = identity.get("arn")
        inp = r.get("input") if isinstance(r.get("input"), dict) else {}
        out = r.get("output") if isinstance(r.get("output"), dict) else {}
        meta = r.get("requestMetadata")
        rec.day = utc_day(r.get("timestamp"))
        rec.model_ref = r.get("modelId")
        rec.operation = r.get("operation")
        rec.billing_account_id = r.get("accountId")
        rec.sub_account_id = r.get("accountId")
        rec.sub_account_type = "AWS Account"
        rec.resource_id = arn
        rec.resource_type = "IAM Principal" if arn else None
        rec.region = r.get("inferenceRegion") or r.get("region")
        tags: dict[str, Any] = {}
        if self.source.options.get("principal_tags", True) and _principal(arn):
            tags["principal"] = _principal(arn)
        if meta is not None and not isinstance(meta, dict):
            rec.quarantine = "requestMetadata is not an object"
            return rec
        tags.update({str(k): v for k, v in (meta or {}).items()})
        rec.tags = tags
        if not rec.model_ref:
            rec.quarantine = "no modelId"
            return rec
        try:
            uncached = as_count(inp.get("inputTokenCount")) or 0
            cache_read = as_count(inp.get("cacheReadInputTokenCount")) or 0
            cache_write = as_count(inp.get("cacheWriteInputTokenCount")) or 0
            output = as_count(out.get("outputTokenCount")) or 0
            body = out.get("outputBodyJson") if isinstance(out.get("outputBodyJson"), dict) else {}
            usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
            creation = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
            long_ttl = min(as_count(creation.get("ephemeral_1h_input_tokens")) or 0, cache_write)
        except ValueError as exc:
            rec.quarantine = f"invalid token count {exc}"
            return rec
        if "inputTokenCount" not in inp and "outputTokenCount" not in out and not r.get("errorCode"):
            rec.quarantine = "record has no token counts"
            return rec
        rec.tokens = {"input": uncached, "cache_read": cache_read, "cache_write_5m": cache_write - long_ttl,
                      "cache_write_1h": long_ttl, "output": output}
        return rec
