"""What every connector does: find the current delivery of a month, land it unchanged, stage it.

A *delivery* is the set of raw objects the provider says is current for a billing month (one
CUR assembly, one Data Exports execution, ...). Landing copies those objects byte for byte to
`<warehouse>/raw/<source>/<month>/<delivery_id>/` and records them in `delivery.json`; the
month's `deliveries.jsonl` keeps every delivery ever landed. A newer delivery replaces the
older one: only the current delivery is ever staged.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from apportion.connectors.errors import SourceError
from apportion.connectors.objectstore import ObjectInfo, ObjectStore
from apportion.models.config import SourceConfig
from apportion.sql import sql_text


@dataclass
class DeliveryPlan:
    """What the provider says is current for one month, before anything is downloaded."""

    month: str
    delivery_id: str
    objects: list[ObjectInfo]
    manifest_key: str | None = None
    layout: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Delivery:
    source: str
    kind: str
    month: str
    delivery_id: str
    layout: str
    manifest_key: str | None
    objects: list[dict]
    fetched_at: str
    local_dir: str
    reused: bool = False

    @property
    def files(self) -> list[tuple[str, Path]]:
        """(key relative to the source URI, local path) of every data object."""
        return [(o["key"], Path(self.local_dir) / o["key"]) for o in self.objects]


class Connector(ABC):
    """The contract between a source kind and the core steps; the steps use nothing else.

    A kind implements: `months` and `plan` (what the provider says is current), `stage_sql` (register the
    landed delivery's rows as a relation of text columns plus `_file`, `_row`, `_file_idx`),
    `file_select` (one file's rows, so an unreadable file can be named), and names its line-item SQL
    (`line_items_sql`, a file under sql/line_items/). Optional: `land` (default: copy the planned
    objects byte for byte), `reference_tables` (temp tables its SQL joins), `stages_per_file` (the core
    stages and converts one file at a time, bounding memory on big months), `line_items_sql_for` (a
    kind with two layouts picks the SQL per delivery) and `line_items_sql_text` (the SQL itself).
    """

    kind: ClassVar[str] = ""
    line_items_sql: ClassVar[str] = ""  # the file under sql/line_items/ that maps staging to line items
    stages_per_file: ClassVar[bool] = False

    def __init__(self, source: SourceConfig):
        self.source = source
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            from apportion.connectors.stores import open_cloud_store  # s3://, file://, paths, az://, gs://

            self._store = open_cloud_store(self.source.uri, self.source.options)
        return self._store

    @abstractmethod
    def months(self) -> list[str]:
        """Billing months the source has deliveries for (YYYY-MM)."""

    def plan(self, month: str) -> DeliveryPlan:
        """The current delivery of `month`; SourceError if the provider's own records disagree.
        Used by the default `land`; a kind that fetches pages from an API overrides `land` instead."""
        raise NotImplementedError(f"{type(self).__name__} lands by fetching; it has no plan")

    def land(self, month: str, raw_root: Path) -> Delivery:
        """Copy the current delivery of `month` unchanged into the raw zone (idempotent)."""
        plan = self.plan(month)
        month_dir = raw_root / self.source.name / month
        target = month_dir / safe_dirname(plan.delivery_id)
        record_path = target / "delivery.json"
        wanted = {o.key: o for o in plan.objects}
        if plan.manifest_key:
            wanted.setdefault(plan.manifest_key, None)  # type: ignore[arg-type]
        if record_path.exists():
            old = json.loads(record_path.read_text())
            same = {o["key"]: o["etag"] for o in old["objects"]} == {o.key: o.etag for o in plan.objects}
            if same and all((target / o.key).exists() for o in plan.objects):
                delivery = Delivery(**{**old, "reused": True})
                _point(month_dir, "LANDED", target.name)
                return delivery
        staging = month_dir / (safe_dirname(plan.delivery_id) + ".landing")
        if staging.exists():
            shutil.rmtree(staging)
        for key in wanted:
            try:
                self.store.download(key, staging / key)
            except FileNotFoundError:
                shutil.rmtree(staging, ignore_errors=True)
                raise SourceError(
                    f"{plan.manifest_key or 'the delivery'} names {key}, which does not exist in {self.source.uri}",
                    file=key,
                ) from None
        delivery = Delivery(
            source=self.source.name,
            kind=self.kind,
            month=month,
            delivery_id=plan.delivery_id,
            layout=plan.layout,
            manifest_key=plan.manifest_key,
            objects=[asdict(o) for o in plan.objects],
            fetched_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            local_dir=str(target),
        )
        (staging / "delivery.json").write_text(json.dumps(asdict(delivery), indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        with open(month_dir / "deliveries.jsonl", "a") as log:
            log.write(json.dumps({k: v for k, v in asdict(delivery).items() if k != "reused"}) + "\n")
        _point(month_dir, "LANDED", target.name)
        return delivery

    @abstractmethod
    def stage_sql(self, con, delivery: Delivery) -> str:
        """Register the delivery's rows in `con` and return the name of the staging relation.
        A kind with `stages_per_file` also takes `only=[file index]`."""

    @abstractmethod
    def file_select(self, con, key: str, path: Path, file_idx: int) -> str:
        """SELECT of one landed file's rows; raises SourceError (or a DuckDB error) when it is unreadable."""

    def reference_tables(self) -> dict[str, Path]:
        """Temp table name -> CSV file of the reference data the kind's SQL joins (models/reference/<kind>/)."""
        return {}

    def line_items_sql_for(self, delivery: Delivery) -> str:
        """The sql/line_items/ file for this delivery (after `stage_sql`)."""
        return self.line_items_sql

    def line_items_sql_text(self, delivery: Delivery) -> str:
        """The SQL that turns the staging relation into the `line_items_checked` view."""
        return sql_text(f"line_items/{self.line_items_sql_for(delivery)}")

def _point(month_dir: Path, name: str, target: str) -> None:
    tmp = month_dir / f"{name}.tmp"
    tmp.write_text(target + "\n")
    tmp.replace(month_dir / name)


def landed_delivery(month_dir: Path, pointer: str = "LANDED") -> Delivery | None:
    """The delivery a pointer names: LANDED (newest landed) or CURRENT (newest that built)."""
    ref = month_dir / pointer
    if not ref.exists():
        return None
    record = month_dir / ref.read_text().strip() / "delivery.json"
    return Delivery(**json.loads(record.read_text())) if record.exists() else None


def promote(delivery: Delivery) -> None:
    """The delivery built: make it CURRENT and drop superseded ones (deliveries.jsonl keeps their record).

    Until then the previous CURRENT delivery stays on disk, so a delivery that fails to build never
    costs the raw files the last good build came from.
    """
    target = Path(delivery.local_dir)
    month_dir = target.parent
    _point(month_dir, "CURRENT", target.name)
    for p in month_dir.iterdir():
        if p.is_dir() and p != target and not p.name.endswith(".landing"):
            shutil.rmtree(p)


def safe_dirname(delivery_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in delivery_id)[:120]
