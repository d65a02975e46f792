"""CLI polish: progress bars go to stderr only when stderr is a terminal; --json stdout stays pure JSON."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

from apportion import cli
from tests.test_allocation import write_delivery

REPO = Path(__file__).resolve().parent.parent


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _project(tmp_path: Path) -> str:
    write_delivery(tmp_path / "bucket")
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    return str(tmp_path / "apportion.yaml")


def test_progress_on_a_terminal_never_garbles_json(tmp_path, monkeypatch, capsys):
    cfg = _project(tmp_path)
    err = FakeTTY()
    monkeypatch.setattr(sys, "stderr", err)
    code = cli.main(["run", "--config", cfg, "--month", "2026-10", "--json"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    summary = json.loads(out)  # stdout is exactly the JSON summary
    assert summary["report"] and Path(summary["report"]).is_file()
    progress = err.getvalue()
    # the month's sources (raw, line items, the month's meeting point, allocation), then one publish run
    for step in ("download aws-main", "convert aws-main", "allocate aws-main", "2026-10 building: done", "4/4",
                 "2026-10 publishing: done", "publish warehouse"):
        assert step in progress, step


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, capsys):
    cfg = _project(tmp_path)
    assert cli.main(["run", "--config", cfg, "--month", "2026-10"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == "building 2026-10 ...\npublishing 2026-10 ...\n"
    assert "HTML report: " in captured.out and "finance CSVs for 2026-10: " in captured.out
    assert cli.main(["run", "--config", cfg, "--month", "2026-10", "--json"]) == cli.EXIT_OK
    assert capsys.readouterr().err == ""
