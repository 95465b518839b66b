"""The local store's filterable metadata: one column per declared field, memory-mapped, so a filter is
a few numpy comparisons over every chunk at once instead of a read per row.

Columns (under index/metadata/, recorded and checked like every index file):
- string: `<field>.codes.npy` (int32, the value's position in `<field>.values.json`; -1: missing);
- number: `<field>.npy` (float64; NaN: missing);
- boolean: `<field>.npy` (int8; 1, 0, -1: missing).
Missing values follow Qdrant's payload semantics: they never match $eq, $in or a comparison, and always
match $ne and $nin; $exists tells them apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from handler.errors import ArtifactError
from handler.filters import All, Any_, Condition, FieldType, Filter

COLUMNS_DIR = "metadata"


def flatten(metadata: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metadata as dotted keys with scalar values ({"device": {"model": "X2"}} → {"device.model": "X2"})."""
    flat = {}
    for key, value in metadata.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        elif isinstance(value, str | bool | int | float) and value is not None:
            flat[f"{prefix}{key}"] = value
    return flat


def kind_of(value: Any) -> FieldType:
    return "boolean" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"


def write_columns(directory: Path, fields: dict[str, FieldType], rows: Iterable[dict[str, Any]], count: int) -> None:
    """One column per field from every chunk's flattened metadata, in label order."""
    values: dict[str, list] = {name: [None] * count for name in fields}
    for label, row in enumerate(rows):
        for name in fields:
            values[name][label] = row.get(name)
    target = directory / COLUMNS_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, kind in fields.items():
        column = values[name]
        if kind == "string":
            distinct = sorted({v for v in column if v is not None})
            position = {v: i for i, v in enumerate(distinct)}
            codes = np.array([position.get(v, -1) for v in column], dtype=np.int32)
            np.save(target / f"{name}.codes.npy", codes)
            (target / f"{name}.values.json").write_text(json.dumps(distinct))
        elif kind == "number":
            np.save(target / f"{name}.npy", np.array([np.nan if v is None else v for v in column], dtype=np.float64))
        else:
            np.save(target / f"{name}.npy", np.array([-1 if v is None else int(v) for v in column], dtype=np.int8))


class MetadataColumns:
    def __init__(self, index_dir: Path, fields: dict[str, FieldType], count: int):
        self.fields, self.count = fields, count
        directory = index_dir / COLUMNS_DIR
        self.columns: dict[str, np.ndarray] = {}
        self.codes: dict[str, dict[str, int]] = {}  # string fields: value → code
        for name, kind in fields.items():
            path = directory / (f"{name}.codes.npy" if kind == "string" else f"{name}.npy")
            try:
                column = np.load(path, mmap_mode="r")
                if kind == "string":
                    self.codes[name] = {
                        v: i for i, v in enumerate(json.loads((directory / f"{name}.values.json").read_text()))
                    }
            except (OSError, ValueError) as error:
                raise ArtifactError(path, f"unreadable metadata column ({error})") from None
            if column.shape != (count,):
                raise ArtifactError(path, f"holds {column.shape} values, the index {count} chunks")
            self.columns[name] = column

    def mask(self, tree: Filter) -> np.ndarray:
        """Which chunks the filter admits, as one boolean per label."""
        if isinstance(tree, All):
            return np.logical_and.reduce([self.mask(part) for part in tree.parts])
        if isinstance(tree, Any_):
            return np.logical_or.reduce([self.mask(part) for part in tree.parts])
        return self._condition(tree)

    def _condition(self, c: Condition) -> np.ndarray:
        column, kind = self.columns[c.field], self.fields[c.field]
        present = column >= 0 if kind != "number" else ~np.isnan(column)
        if c.op == "$exists":
            return present if c.value else ~present
        values = c.value if c.op in ("$in", "$nin") else (c.value,)
        stored = [self._stored(c.field, kind, v) for v in values]
        if c.op in ("$eq", "$in"):
            return np.isin(column, stored) & present
        if c.op in ("$ne", "$nin"):
            return ~(np.isin(column, stored) & present)
        compare = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less, "$lte": np.less_equal}[c.op]
        return compare(column, stored[0]) & present

    def _stored(self, name: str, kind: FieldType, value: Any) -> float | int:
        """A value as its column stores it (a string no chunk holds becomes a code no chunk has)."""
        if kind == "string":
            return self.codes[name].get(value, -2)
        return int(value) if kind == "boolean" else float(value)
