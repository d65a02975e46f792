"""A new user's first commands: --version, --help for every option, a missing config that says what to do,
`apportion months` telling built months from months a source merely offers, a compact coverage table."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from apportion import cli
from tests.test_allocation import write_delivery

REPO = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    """The CLI's parser, captured from main() (parse_args of `--help` on the top level)."""
    captured = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        captured.setdefault("parser", self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            cli.main([])
    finally:
        argparse.ArgumentParser.parse_args = real
    return captured["parser"]


def _walk(parser: argparse.ArgumentParser, path=("apportion",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"apportion {version('apportion')}"


def test_every_option_of_every_command_has_help(capsys):
    walked = list(_walk(_parser()))
    names = {" ".join(p) for p, _ in walked}
    assert {"apportion run", "apportion export", "apportion report", "apportion months", "apportion demo",
            "apportion taxonomy check", "apportion taxonomy diff"} <= names
    missing = [(" ".join(path), a.dest) for path, parser in walked for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help and a.help.strip())]
    assert missing == []
    # and the help text is what --help prints
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    out = capsys.readouterr().out
    assert "--lines {parquet,csv}" in out and "line-level file" in out and "demo/apportion.yaml" in out


def test_a_missing_default_config_says_where_it_looked_and_how_to_use_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for args in (["months"], ["run"], ["export", "--month", "2026-11", "--out", "pack"], ["report"]):
        assert cli.main(args) == cli.EXIT_CONFIG, args
        err = capsys.readouterr().err
        assert f"looked for ./apportion.yaml ({tmp_path / 'apportion.yaml'})" in err, args
        assert "--config demo/apportion.yaml" in err
    assert not (tmp_path / "pack").exists()
    assert cli.main(["months", "--config", "nope.yaml"]) == cli.EXIT_CONFIG
    assert "config file nope.yaml not found" in capsys.readouterr().err


def test_months_tells_built_months_from_offered_ones(tmp_path, capsys):
    write_delivery(tmp_path / "bucket")  # a CUR export with 2026-10
    write_delivery(tmp_path / "bucket", month="2026-09")
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    cfg = tmp_path / "apportion.yaml"
    cfg.write_text("warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
                   "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    assert cli.main(["months", "--config", str(cfg)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "nothing built yet" in out
    assert "aws-main (aws_cur)  built: -; offered, not built: 2026-09 2026-10" in out
    # export of a month that is not built: refused with the list, no files
    assert cli.main(["export", "--config", str(cfg), "--month", "2026-10", "--out", str(tmp_path / "p")]) == 1
    assert "no warehouse" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert cli.main(["run", "--config", str(cfg), "--month", "2026-10", "--json"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["months", "--config", str(cfg)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "months built 2026-10" in out
    assert "aws-main (aws_cur)  built: 2026-10; offered, not built: 2026-09" in out
    code = cli.main(["export", "--config", str(cfg), "--month", "2026-09", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "month 2026-09 is not in the warehouse" in err and "(it has: 2026-10;" in err
    assert not (tmp_path / "p").exists()
    code = cli.main(["taxonomy", "diff", str(tmp_path / "taxonomy.yaml"), str(tmp_path / "taxonomy.yaml"),
                     "--month", "2026-09", "--config", str(cfg)])
    assert code == cli.EXIT_FAILED and "2026-09 is not in the warehouse" in capsys.readouterr().err


def test_coverage_table_is_one_row_per_month_and_source_with_spend():
    def cov(month, source, dim, coverage, untagged="0", shared="0"):
        from decimal import Decimal

        return {"month": month, "source": source, "dimension": dim, "coverage": coverage,
                "untagged_cost": Decimal(untagged), "shared_cost": Decimal(shared)}

    rows = [cov("2026-11", "aws-main", d, c, u, "5") for d, c, u in
            (("project", 0.5, "50"), ("team", 0.9, "10"), ("workload", None, "0"))]
    rows += [cov("2026-11", "hpc-dcgm", d, None) for d in ("project", "team", "workload")]  # usage only: no spend
    dims, table = cli.coverage_rows(rows)
    assert dims == ["team", "project", "workload"]
    assert table == [["2026-11", "aws-main", "90.0%", "50.0%", "-", "10.00", "5.00"]]


def test_readme_says_how_to_call_the_cli_and_which_python():
    import re
    import tomllib

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/apportion" in quickstart and "source .venv/bin/activate" in quickstart
    assert "--config demo/apportion.yaml" in quickstart
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.13"
    assert re.search(r"Python 3\.11 or 3\.12", quickstart)
    assert "Python 3.11 or 3.12" in (REPO / "Makefile").read_text().splitlines()[0]
