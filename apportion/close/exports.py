"""The close's part of the finance pack: `restatement_deltas.csv` in a closed month's pack, and the history of
published packs (`<warehouse>/exports/.history/<month>/<published_at>/`) that `apportion export --as-of`
reads. A new history entry is kept only when the pack differs from the newest kept one (same bytes: the
newest entry already answers for that day); entries older than `export_history_days` are removed, except
the newest of each month.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import uuid
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from apportion.close.store import file_sha256, manifest
from apportion.models.config import ApportionConfig

DELTAS_FILE = "restatement_deltas.csv"
DELTA_COLUMNS = ("billing_month", "source", "billing_currency", "team", "project", "workload", "reason", "detail",
                 "lines", "closed_billed_cost", "current_billed_cost", "delta_billed_cost", "closed_effective_cost",
                 "current_effective_cost", "delta_effective_cost")
HISTORY = ".history"
STAMP = "%Y%m%dT%H%M%S%fZ"


def write_deltas(cfg: ApportionConfig, con, tmp: Path, month: str) -> None:
    """restatement_deltas.csv for a closed month (header only when nothing changed since the close): the
    closed pack's control totals + Σ delta_* = this pack's control totals, per source and currency."""
    if manifest(cfg, month) is None:
        return
    from apportion.steps.exports import _csv_select

    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'restatements'").fetchone()[0]
    cols = ", ".join(DELTA_COLUMNS)
    relation = (f"(SELECT {cols} FROM restatements WHERE billing_month = getvariable('export_month'))" if has else
                "(SELECT " + ", ".join(f"NULL::{'BIGINT' if c == 'lines' else 'DECIMAL(38, 12)' if 'cost' in c else 'VARCHAR'}"
                                       f" AS {c}" for c in DELTA_COLUMNS) + " WHERE false)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _deltas AS SELECT * FROM {relation} "
                "ORDER BY source, billing_currency, reason, abs(delta_effective_cost) DESC, team, project, workload")
    dest = str(tmp / DELTAS_FILE).replace("'", "''")
    con.execute(f"COPY ({_csv_select(con, '_deltas', list(DELTA_COLUMNS))}) TO '{dest}' (HEADER, DELIMITER ',')")
    twin = dest.removesuffix(".csv") + ".parquet"  # the Parquet twin, as every summary has
    con.execute(f"COPY _deltas TO '{twin}' (FORMAT parquet, COMPRESSION zstd)")
    con.execute("DROP TABLE _deltas")


def history_root(cfg: ApportionConfig, month: str) -> Path:
    return cfg.exports / HISTORY / month


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + b"\0" + file_sha256(p).encode())  # streamed: packs can be large
    return h.hexdigest()


def kept_packs(cfg: ApportionConfig, month: str) -> list[tuple[datetime, Path]]:
    """(published_at, folder) of every kept pack of the month, oldest first."""
    root = history_root(cfg, month)
    out = []
    for p in root.iterdir() if root.is_dir() else []:
        try:
            out.append((datetime.strptime(p.name, STAMP).replace(tzinfo=timezone.utc), p))
        except ValueError:
            continue  # a temporary folder of an interrupted copy
    return sorted(out)


def keep_history(cfg: ApportionConfig, month: str, out: Path, now: datetime | None = None) -> Path | None:
    """Keep a copy of a pack just published at <warehouse>/exports/<month>/ (other --out folders are not
    publications). Returns the history folder, or None when the pack was not kept (same as the newest)."""
    if out.resolve() != (cfg.exports / month).resolve():
        return None
    now = now or datetime.now(timezone.utc)
    kept = kept_packs(cfg, month)
    result = None
    if not kept or _digest(kept[-1][1]) != _digest(out):
        root = history_root(cfg, month)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(out, tmp, copy_function=_linker(kept[-1][1] if kept else None))
        result = root / now.strftime(STAMP)
        tmp.rename(result)
        kept = kept_packs(cfg, month)
    cutoff = now - timedelta(days=cfg.export_history_days)
    for other in sorted((cfg.exports / HISTORY).iterdir()):
        for published_at, folder in kept_packs(cfg, other.name)[:-1]:  # the newest stays: what finance has now
            if published_at < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
    return result


def _linker(previous: Path | None):
    """copytree's copy function: a file byte-identical to the newest kept pack's is a hard link to it (kept
    packs are never rewritten), any other a copy."""
    def copy(src: str, dst: str) -> None:
        same = previous / Path(src).name if previous else None
        if same is not None and same.is_file() and filecmp.cmp(same, src, shallow=False):
            try:
                return os.link(same, dst)
            except OSError:
                pass
        shutil.copy2(src, dst)
    return copy


class AsOfError(Exception):
    """No kept pack answers the --as-of date."""


def parse_as_of(text: str) -> datetime:
    """A date (the end of that UTC day) or an ISO 8601 time (UTC when no zone)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time.max, tzinfo=timezone.utc)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--as-of {text!r} must be a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM:SSZ") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def pack_as_of(cfg: ApportionConfig, month: str, when: datetime) -> Path:
    """The newest pack of `month` published at or before `when`."""
    kept = kept_packs(cfg, month)
    if not kept:
        raise AsOfError(f"no published pack of {month} is kept under {history_root(cfg, month)} "
                        "(packs are kept from the first nightly publication after month close was installed)")
    candidates = [folder for published_at, folder in kept if published_at <= when]
    if not candidates:
        first = kept[0][0].isoformat(timespec="seconds")
        raise AsOfError(f"no pack of {month} was published at or before {when.isoformat(timespec='seconds')}: the "
                        f"first kept version was published at {first} (older versions are removed after "
                        f"export_history_days = {cfg.export_history_days} days, or were never published)")
    return candidates[-1]


def copy_pack(src: Path, out: Path) -> Path:
    """Replace `out` with a byte-identical copy of the kept pack `src`."""
    tmp = out.with_name(out.name + f".tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
