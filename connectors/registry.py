"""Connector classes by source kind, from the one list of kinds in `models.source_kinds`.

A class is imported when a source of its kind is first used, so nothing here imports every connector
(and no connector imports this module).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from apportion.models.source_kinds import SOURCE_KINDS


class _Connectors(Mapping):
    """kind -> connector class, imported on first use."""

    def __init__(self, table: Mapping[str, str]):
        self._table = table
        self._loaded: dict[str, type] = {}

    def __getitem__(self, kind: str) -> type:
        if kind not in self._loaded:
            module, _, cls = self._table[kind].partition(":")
            self._loaded[kind] = getattr(importlib.import_module(module), cls)
        return self._loaded[kind]

    def __iter__(self):
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


CONNECTORS: Mapping[str, type] = _Connectors(SOURCE_KINDS)


def connector_for(source):
    return CONNECTORS[source.kind](source)
