"""What the GPU kinds share: options with a local time zone, the dump files of a store parsed once per
(key, etag), and the GPU SQL helpers (sql/macros/gpu_macros.sql) their line-item SQL uses."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
from pydantic import Field, field_validator

from apportion.connectors.base import Connector, Delivery, DeliveryPlan, SourceError
from apportion.models.gpu_rates import GpuOptions, GpuOptionsError, parse_gpu_options, register_gpu_tables
from apportion.sql import sql_text


class LocalTimeGpuOptions(GpuOptions):
    """GPU options of a kind whose files carry local timestamps without an offset."""

    timezone: str = Field("UTC", description="IANA time zone of the file's timestamps (those without an offset).")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)") from None
        return v


class GpuConnector(Connector):
    """A GPU kind: its options (`options_model`) validated with the option's path in every message, and its
    line-item SQL preceded by the GPU macros (GPU-hours from microseconds, the rate card lookup, the month)."""

    options_model: ClassVar[type[GpuOptions]] = GpuOptions

    def __init__(self, source):
        super().__init__(source)
        try:
            self.opts: Any = parse_gpu_options(source.name, source.options, self.options_model)
        except GpuOptionsError as exc:
            raise SourceError(str(exc)) from None

    def line_items_sql_text(self, delivery: Delivery) -> str:
        return sql_text("macros/gpu_macros.sql") + "\n" + super().line_items_sql_text(delivery)

    def stage_rows(self, con, table: str, rows: list[dict], schema: pa.Schema) -> str:
        """Stage parsed rows as the temp table `table`, with the rate card, capacity and idle owner tables
        and `gpu_source_context` (currency, whether rates are configured, cluster, scrape interval)."""
        con.register(f"{table}_arrow", pa.Table.from_pylist(rows, schema=schema))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {table}_arrow")
        con.unregister(f"{table}_arrow")
        register_gpu_tables(con, self.opts, self.opts.cluster)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE gpu_source_context AS SELECT ?::VARCHAR AS currency, ?::BOOLEAN AS has_rates, "
            "?::VARCHAR AS default_cluster, ?::DOUBLE AS scrape_interval_seconds",
            [self.opts.currency, bool(self.opts.rates), self.opts.cluster or "default",
             getattr(self.opts, "scrape_interval_seconds", None)],
        )
        return table


class GpuFileConnector(GpuConnector):
    """A GPU kind that reads dump files from a store: every data file (by suffix, hidden files skipped),
    each parsed once per (key, etag) by `parse_bytes`."""

    data_suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, source):
        super().__init__(source)
        self.tz = ZoneInfo(self.opts.timezone)
        self._parsed: dict[tuple[str, str], list] = {}

    def parse_bytes(self, key: str, data: bytes) -> list:
        raise NotImplementedError

    def _files(self):
        objects, _ = self.store.list("")
        return [o for o in objects
                if not o.key.rsplit("/", 1)[-1].startswith(".") and o.key.lower().endswith(self.data_suffixes)]

    def _parsed_of(self, obj) -> list:
        key = (obj.key, obj.etag)
        if key not in self._parsed:
            self._parsed[key] = self.parse_bytes(obj.key, self.store.read_bytes(obj.key))
        return self._parsed[key]

    def delivery_of(self, month: str, chosen: list, id_prefix: str, layout: str) -> DeliveryPlan:
        """The month's delivery: the chosen files, its id a hash of their keys and etags (a changed or
        added file makes a new delivery)."""
        h = hashlib.sha1()
        for o in sorted(chosen, key=lambda o: o.key):
            h.update(f"{o.key}\0{o.etag}\0".encode())
        return DeliveryPlan(month, f"{id_prefix}-" + h.hexdigest()[:16], chosen, None, layout)


def gunzipped(key: str, data: bytes) -> bytes:
    """The bytes of a dump, decompressed when it is gzip (by name or by magic number)."""
    if key.lower().endswith(".gz") or data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read {key}: not a valid gzip file ({exc})", file=key) from None
    return data
