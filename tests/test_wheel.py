"""The built wheel works on its own: one `apportion` namespace (no top-level `models`, `sql`, ...), every
SQL, CSV and YAML file inside, and `apportion demo` + `apportion run` from a fresh virtual environment
outside the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(cmd, cwd, env=None, timeout=600):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode in (0, 3), f"{cmd}: rc {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_installs_one_namespace_with_its_data_and_runs_the_demo(tmp_path):
    # build (no network: the pinned setuptools from the test extras, no build isolation)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
          REPO], cwd=tmp_path)
    [wheel] = list((tmp_path / "dist").glob("apportion-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"apportion"}, tops
    for needed in ("apportion/sql/line_items/aws_cur.sql", "apportion/sql/macros/create_macros.sql",
                   "apportion/models/reference/aws_cur/services.csv",
                   "apportion/models/reference/azure_cost/regions.csv", "apportion/demo/apportion.yaml",
                   "apportion/demo/taxonomy.yaml", "apportion/demo/generators/aws_cur.py"):
        assert needed in names, needed
    sql_in_repo = {p.relative_to(REPO / "sql").as_posix() for p in (REPO / "sql").rglob("*.sql")}
    assert {n.removeprefix("apportion/sql/") for n in names if n.endswith(".sql")} == sql_in_repo

    # a fresh venv: the wheel installed without dependencies, which it borrows from this environment's
    # site-packages (a path, not a site dir: this checkout's editable install is not active there)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    fresh_site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
                      .stdout.strip())
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp_path)

    work = tmp_path / "work"  # outside the checkout: nothing may come from the source tree
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAGSTER_HOME")}
    where = _run([py, "-c", "import apportion.steps, apportion.sql, apportion.connectors.registry as r; "
                  "print(apportion.steps.__file__); print(r.__file__)"], work, env).stdout
    assert str(REPO) not in where and "site-packages/apportion/" in where
    assert _run([py, "-c", "import importlib.util as u; print([m for m in ('models', 'sql', 'connectors', "
                 "'pipelines') if u.find_spec(m)])"], work, env).stdout.strip() == "[]"

    apportion = env_dir / "bin" / "apportion"
    demo = _run([apportion, "demo"], work, env)
    config = work / "apportion-demo" / "demo" / "apportion.yaml"
    assert config.exists() and str(config) in demo.stdout
    first_month = demo.stdout.split("demo CUR 2.0 export for ", 1)[1].split(":", 1)[0].split(", ")[0]
    run = _run([apportion, "run", "--config", config, "--month", first_month, "--json"], work, env)
    summary = json.loads(run.stdout)
    assert all(m["success"] for m in summary["months"]), summary["months"]
    assert all(t["billed_cost"] == t["allocated_billed_cost"] for t in summary["totals"])
    assert (work / "apportion-demo" / "data" / "apportion.duckdb").exists()
