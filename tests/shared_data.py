"""Real provider samples, read in place from the workplace's `../shared/data/` (never copied here).

Developers and CI have that folder beside the clone; a user's fresh clone does not, so a test that
wants a real sample calls `shared_sample(...)`, which skips the test with the reason when the file is
absent. `APPORTION_SHARED_DATA` points at another copy of the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("APPORTION_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


def shared_sample(relative: str) -> Path:
    """Path of a real sample under shared/data (e.g. 'aws/test_cur.csv'); skips the test when absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real sample {relative} not found under {SHARED_DATA} "
                    "(the workplace's shared/data folder; set APPORTION_SHARED_DATA to point at it)")
    return path
