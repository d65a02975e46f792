"""One writer of the warehouse at a time: across runs, processes and machines, whatever admitted the step.

The steps that write the warehouse (out_warehouse, out_guardrails, out_month_close, and `apportion close`) hold this
lock for their whole body. The `apportion_warehouse` pool is what keeps the second writer queued in Dagster's UI, but
it is not a lock: Dagster's slot claim on PostgreSQL checks for a free slot, then assigns it, in separate
autocommitted statements, so two run workers claiming at the same instant can both be given the one slot (seen in
tests/test_scale_out.py on 2 December: two builds started within 0.2 s). This lock does not depend on that:

* **PostgreSQL** (the production instance, deploy/dagster.yaml): a session advisory lock on the instance's own
  database, which every run worker and step pod already reaches. It is held by an open connection, so a writer that
  is killed (OOM, a deleted pod) releases it when its connection closes; nobody has to clean up.
* **Otherwise** (SQLite instance, or no Dagster instance): an exclusive `flock` on `<warehouse>/.writer.lock`, which
  serialises every process of this host (the kernel releases it when the holder dies). Several machines need the
  PostgreSQL instance (docs/running-at-scale.md).

The lock is named by what two writers would both overwrite: the `publish_to:` location when set, else the local
warehouse folder. It is re-entrant within a thread (a writer that calls another writer), not across threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

WAIT_LOG_SECONDS = 30.0  # while waiting, say so this often
POLL_SECONDS = 0.5
LOCK_FILE = ".writer.lock"

_held: dict[tuple[str, int], int] = {}
_held_guard = threading.Lock()


def lock_name(cfg) -> str:
    return cfg.publish_to or str(Path(cfg.warehouse).resolve())


def advisory_key(name: str) -> int:
    """PostgreSQL's advisory locks take one signed 64-bit key: the first 8 bytes of the name's SHA-256."""
    return int.from_bytes(hashlib.sha256(f"apportion warehouse writer {name}".encode()).digest()[:8], "big",
                          signed=True)


@contextlib.contextmanager
def warehouse_writer(cfg, instance=None, log: Callable[[str], None] = print) -> Iterator[dict]:
    """Hold the warehouse writer lock for the body; yields {"lock": how, "waited_seconds": s}."""
    name = lock_name(cfg)
    mine = (name, threading.get_ident())
    with _held_guard:
        depth = _held.get(mine, 0)
        _held[mine] = depth + 1
    try:
        if depth:  # this thread already holds it (a writer that calls another writer)
            yield {"lock": "held by this thread", "waited_seconds": 0.0}
            return
        with _acquire(cfg, name, instance, log) as info:
            log(f"warehouse writer lock acquired ({info['lock']}, waited {info['waited_seconds']:.1f} s)")
            try:
                yield info
            finally:
                log("warehouse writer lock released")
    finally:
        with _held_guard:
            _held[mine] -= 1
            if not _held[mine]:
                del _held[mine]


@contextlib.contextmanager
def _acquire(cfg, name: str, instance, log) -> Iterator[dict]:
    if instance is not None:
        with instance.event_log_storage.index_connection() as conn:
            if conn.dialect.name == "postgresql":
                with _advisory(conn, name, log) as info:
                    yield info
                return
    with _file_lock(Path(cfg.warehouse) / LOCK_FILE, log) as info:
        yield info


@contextlib.contextmanager
def _advisory(conn, name: str, log) -> Iterator[dict]:
    import sqlalchemy as sa

    key = advisory_key(name)
    take = sa.select(sa.func.pg_try_advisory_lock(sa.bindparam("key", key, type_=sa.BigInteger)))
    waited = _wait(lambda: bool(conn.execute(take).scalar()), name, log)
    try:
        yield {"lock": "PostgreSQL advisory lock", "waited_seconds": waited}
    finally:
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(sa.bindparam("key", key, type_=sa.BigInteger))))
        except sa.exc.DBAPIError as exc:  # the session is gone, and its lock with it: the work itself is done
            log(f"warehouse writer lock: the database session ended before the unlock ({type(exc.orig).__name__})")


@contextlib.contextmanager
def _file_lock(path: Path, log) -> Iterator[dict]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:

        def take() -> bool:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        waited = _wait(take, str(path), log)
        try:
            yield {"lock": f"file lock {path}", "waited_seconds": waited}
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _wait(take: Callable[[], bool], name: str, log) -> float:
    start = last = time.monotonic()
    first = True
    while not take():
        now = time.monotonic()
        if first or now - last >= WAIT_LOG_SECONDS:
            log(f"waiting for the warehouse writer lock ({name}): another run is writing the warehouse")
            first, last = False, now
        time.sleep(POLL_SECONDS)
    return time.monotonic() - start
