"""Which metadata fields an index makes filterable, and their types: by default every key (nested keys
dotted) whose values are all strings, all numbers or all booleans; `--filter-fields` names them instead.
The local build writes their columns (handler/metadata_columns.py), a Qdrant load indexes their payload."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from handler.filters import FieldType
from handler.metadata_columns import flatten, kind_of

log = logging.getLogger(__name__)


class FieldTypes:
    """Every flattened key's value types, fed chunk by chunk."""

    def __init__(self):
        self.kinds: dict[str, set[FieldType]] = {}

    def add(self, metadata: dict[str, Any]) -> dict[str, Any]:
        flat = flatten(metadata)
        for key, value in flat.items():
            self.kinds.setdefault(key, set()).add(kind_of(value))
        return flat

    def declared(self, asked: list[str] | None) -> dict[str, FieldType]:
        """The filterable fields: those asked (each must hold one type), else every single-typed key."""
        if asked is not None:
            missing = [name for name in asked if name not in self.kinds]
            mixed = [name for name in asked if len(self.kinds.get(name, ())) > 1]
            if missing or mixed:
                raise ValueError(
                    f"filter_fields: {missing or mixed} "
                    + ("are in no document's metadata" if missing else "hold values of more than one type")
                    + f"; the metadata has {sorted(self.kinds)}"
                )
            return {name: next(iter(self.kinds[name])) for name in asked}
        mixed = sorted(name for name, kinds in self.kinds.items() if len(kinds) > 1)
        if mixed:
            log.warning("metadata fields %s hold values of more than one type: not filterable", mixed)
        return {name: next(iter(kinds)) for name, kinds in sorted(self.kinds.items()) if len(kinds) == 1}


def declared_fields(metadata: Iterable[dict[str, Any]], asked: list[str] | None) -> dict[str, FieldType]:
    types = FieldTypes()
    for row in metadata:
        types.add(row)
    return types.declared(asked)
