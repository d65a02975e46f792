"""The apportion code location.

`dagster dev -m pipelines.definitions` loads the config named by $APPORTION_CONFIG
(default: ./apportion.yaml, else the bundled demo config).
"""

from __future__ import annotations

import os
from pathlib import Path

from apportion.demo import DEMO_CONFIG
from apportion.models.config import load_config
from apportion.pipelines.location import build_definitions


def default_config_path() -> Path:
    if os.environ.get("APPORTION_CONFIG"):
        return Path(os.environ["APPORTION_CONFIG"])
    local = Path("apportion.yaml")
    return local if local.exists() else DEMO_CONFIG


defs = build_definitions(load_config(default_config_path()))
