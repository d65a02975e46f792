"""The warehouse writer lock (pipelines/writer_lock.py): one writer at a time across processes, on PostgreSQL (the
production instance: deploy/dagster.yaml on a real server started by the test) and with the file lock (SQLite or no
instance). Each holder is a separate process, as two run workers would be; a holder killed with SIGKILL frees the lock
for the one waiting."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_close import project  # noqa: F401 - the fixture: a built month, ready to close

REPO = Path(__file__).resolve().parent.parent


def hold(warehouse: str, publish_to: str, seconds: float, use_instance: bool) -> None:
    """In a process of its own: take the lock, print when it was acquired and released (wall clock)."""
    from apportion.pipelines.writer_lock import warehouse_writer

    instance = None
    if use_instance:
        import dagster as dg

        instance = dg.DagsterInstance.get()
    cfg = SimpleNamespace(warehouse=Path(warehouse), publish_to=publish_to or None)
    with warehouse_writer(cfg, instance, log=lambda m: print("log:", m, flush=True)) as info:
        print(f"acquired {time.time()} {info['lock']}", flush=True)
        if seconds < 0:  # until told (a line on stdin)
            sys.stdin.readline()
        else:
            time.sleep(seconds)
        print(f"released {time.time()}", flush=True)


class Holder:
    """A process holding the lock. Its output is read by a thread into a queue, so that every wait of the test is
    bounded: a lock that never comes fails the test instead of hanging it."""

    def __init__(self, warehouse: Path, seconds: float, env: dict, publish_to: str = "", use_instance: bool = False):
        code = (f"from tests.test_writer_lock import hold; "
                f"hold({str(warehouse)!r}, {publish_to!r}, {seconds}, {use_instance})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._out: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._out.put(line.strip())
        self._out.put(None)  # end of output

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no '{prefix}' within {timeout} s: {self.lines}")
            if line is None:
                pytest.fail(f"holder exited before '{prefix}': {self.proc.stderr.read()[-2000:]}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def release(self) -> None:
        if self.proc.stdin.closed:  # finished already (closing stdin releases too)
            return
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> tuple[float, float]:
        self.proc.stdin.close()
        self.wait_for("released", timeout)
        assert self.proc.wait(timeout=timeout) == 0, self.proc.stderr.read()[-2000:]
        acquired = next(float(ln.split()[1]) for ln in self.lines if ln.startswith("acquired"))
        released = next(float(ln.split()[1]) for ln in self.lines if ln.startswith("released"))
        return acquired, released


def _serialises_and_survives_a_kill(warehouse: Path, env: dict, use_instance: bool, how: str) -> None:
    first = Holder(warehouse, -1, env, use_instance=use_instance)
    assert how in first.wait_for("acquired")
    second = Holder(warehouse, 0.0, env, use_instance=use_instance)
    second.wait_for("log: waiting")
    first.release()
    a, b = first.finish(), second.finish()
    assert b[0] >= a[1], f"the second writer started at {b[0]}, before the first released at {a[1]}"
    assert any("waiting for the warehouse writer lock" in ln for ln in second.lines), second.lines

    # a holder killed outright (OOM, a deleted pod) frees the lock: the waiter goes on
    killed = Holder(warehouse, 600.0, env, use_instance=use_instance)
    killed.wait_for("acquired")
    waiter = Holder(warehouse, 0.0, env, use_instance=use_instance)
    waiter.wait_for("log: waiting")
    os.kill(killed.proc.pid, signal.SIGKILL)
    killed.proc.wait(timeout=30)
    waiter.wait_for("acquired", timeout=30)
    waiter.finish()


def test_the_file_lock_keeps_one_writer_and_a_killed_writer_frees_it(tmp_path):
    _serialises_and_survives_a_kill(tmp_path / "warehouse", dict(os.environ), use_instance=False,
                                    how=f"file lock {tmp_path / 'warehouse' / '.writer.lock'}")


def _postgres_instance_env(tmp_path, postgres_server, monkeypatch) -> dict:
    from tests.test_scale_out import postgres_instance

    postgres_instance(tmp_path, postgres_server, monkeypatch, prefix="lock").dispose()  # the tables, as a deploy does
    return dict(os.environ)


def test_on_postgres_one_writer_across_processes_and_a_killed_writer_frees_it(tmp_path, postgres_server, monkeypatch):
    """The production case: two run workers with the deploy/dagster.yaml instance meet on its PostgreSQL."""
    env = _postgres_instance_env(tmp_path, postgres_server, monkeypatch)
    _serialises_and_survives_a_kill(tmp_path / "warehouse", env, use_instance=True, how="PostgreSQL advisory lock")


def test_on_postgres_two_warehouses_do_not_wait_for_each_other(tmp_path, postgres_server, monkeypatch):
    """The lock is per warehouse (its publish_to location): two deployments sharing one database run side by side."""
    env = _postgres_instance_env(tmp_path, postgres_server, monkeypatch)
    a = Holder(tmp_path / "a", 600.0, env, publish_to="s3://bucket/team-a", use_instance=True)
    a.wait_for("acquired")
    b = Holder(tmp_path / "b", 0.0, env, publish_to="s3://bucket/team-b", use_instance=True)
    b.finish(timeout=30)  # while a still holds its own warehouse's lock
    assert not any("waiting" in ln for ln in b.lines), b.lines
    # the same publish_to from another local folder (another machine's working copy) is the same warehouse
    c = Holder(tmp_path / "c", 0.0, env, publish_to="s3://bucket/team-a", use_instance=True)
    c.wait_for("log: waiting")
    a.proc.kill()
    a.proc.wait(timeout=30)
    c.finish()


def test_the_lock_is_reentrant_within_a_thread_and_excludes_other_threads(tmp_path):
    from apportion.pipelines.writer_lock import warehouse_writer

    cfg = SimpleNamespace(warehouse=tmp_path, publish_to=None)
    nested: list[str] = []

    def twice():  # in a thread of its own, so that a lock that is not re-entrant fails the test instead of hanging it
        with warehouse_writer(cfg, log=lambda m: None) as outer:
            with warehouse_writer(cfg, log=lambda m: None) as inner:
                nested.extend([outer["lock"], inner["lock"]])

    t = threading.Thread(target=twice, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the lock taken a second time by the thread holding it blocked"
    assert nested[0].startswith("file lock") and nested[1] == "held by this thread"

    with warehouse_writer(cfg, log=lambda m: None):
        # another thread of this process waits like another process would
        taken = threading.Event()

        def other_thread():
            with warehouse_writer(cfg, log=lambda m: None):
                taken.set()

        t = threading.Thread(target=other_thread)
        t.start()
        assert not taken.wait(1.0), "another thread took the lock this thread holds"
    t.join(timeout=10)
    assert taken.is_set()
    # released: another process takes it at once
    other = Holder(tmp_path, 0.0, dict(os.environ))
    other.finish()
    assert not any("waiting" in ln for ln in other.lines)


def test_a_close_by_hand_waits_for_the_writer_in_progress(project, capsys):  # noqa: F811 - the fixture
    """`apportion close` writes the warehouse folder like out_month_close: it waits while a build holds the lock."""
    from apportion.cli import main
    from tests.test_close import MONTH

    tmp_path, cfg = project
    build = Holder(cfg.warehouse, -1, dict(os.environ))
    build.wait_for("acquired")
    threading.Timer(3.0, build.release).start()
    assert main(["close", "--config", str(tmp_path / "apportion.yaml"), "--month", MONTH]) == 0
    returned = time.time()
    _, released = build.finish()
    assert returned >= released
    assert "waiting for the warehouse writer lock" in capsys.readouterr().err
