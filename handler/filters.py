"""Metadata filters, in the operator style of Pinecone and Chroma: a field with a value means equality
(`{"drug": "Corvadil"}`); operators `$eq $ne $in $nin $gt $gte $lt $lte $exists`; combinators `$and` and
`$or`; several keys in one object all hold. Values are strings, numbers or booleans; a dotted key reads
nested metadata (`{"device.model": "X2"}`).

A filter is parsed once against the fields the store declares filterable (each with its type), into a
small tree every store evaluates its own way: the local store over its metadata columns
(handler/metadata_columns.py), Qdrant as a `Filter` in the same round trip. A bad filter is an
InvalidRequest naming its path (`filter.$and.1.year.$gt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from handler.errors import InvalidRequest

FieldType = Literal["string", "number", "boolean"]
COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$ne", "$in", "$nin", *COMPARISONS, "$exists")
MAX_DEPTH = 8  # nested $and/$or
MAX_VALUES = 1000  # in one $in / $nin


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # one of OPERATORS
    value: Any  # a scalar, a tuple of scalars ($in, $nin) or a bool ($exists)


@dataclass(frozen=True)
class All:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Any_:
    parts: tuple[Filter, ...]


Filter = Condition | All | Any_


def parse(raw: Any, fields: dict[str, FieldType], path: str = "filter") -> Filter | None:
    """The filter tree, or None for no filter (None or {}); InvalidRequest naming the path at fault."""
    if raw is None or raw == {}:
        return None
    return _parse(raw, fields, path, 0)


def _fail(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(path, message)


def _parse(raw: Any, fields: dict[str, FieldType], path: str, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "must be a non-empty object of fields and $and / $or")
    parts = []
    for key, value in raw.items():
        where = f"{path}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _fail(where, "must be a non-empty list of filters")
            inner = tuple(_parse(v, fields, f"{where}.{i}", depth + 1) for i, v in enumerate(value))
            parts.append(All(inner) if key == "$and" else Any_(inner))
        elif key.startswith("$"):
            raise _fail(where, f"unknown combinator {key!r}; use $and or $or (operators go inside a field)")
        else:
            parts.append(_field(key, value, fields, where))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _field(name: str, value: Any, fields: dict[str, FieldType], path: str) -> Filter:
    if name not in fields:
        known = ", ".join(sorted(fields)) or "none (the index declares no filterable fields)"
        raise _fail(path, f"{name!r} is not a filterable field; filterable: {known}")
    if not isinstance(value, dict):  # a bare value: equality
        return Condition(name, "$eq", _scalar(value, fields[name], path))
    if not value:
        raise _fail(path, f"needs an operator: one of {', '.join(OPERATORS)}")
    parts = [_operator(name, op, operand, fields[name], f"{path}.{op}") for op, operand in value.items()]
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _operator(name: str, op: str, operand: Any, kind: FieldType, path: str) -> Condition:
    if op not in OPERATORS:
        raise _fail(path, f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if op == "$exists":
        if not isinstance(operand, bool):
            raise _fail(path, "must be true or false")
        return Condition(name, op, operand)
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand or len(operand) > MAX_VALUES:
            raise _fail(path, f"must be a list of 1 to {MAX_VALUES} values")
        return Condition(name, op, tuple(_scalar(v, kind, f"{path}.{i}") for i, v in enumerate(operand)))
    if op in COMPARISONS and kind != "number":
        raise _fail(path, f"{op} compares numbers; {name!r} holds {kind}s")
    return Condition(name, op, _scalar(operand, kind, path))


def _scalar(value: Any, kind: FieldType, path: str) -> Any:
    """A value of the field's type (JSON's 10.0 is the number 10; true is not a number)."""
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(path, "must be a finite number")
        return float(value)
    if kind == "string" and isinstance(value, str):
        return value
    raise _fail(path, f"must be a {kind}, not {type(value).__name__ if value is not None else 'null'}")


def fields_of(tree: Filter | None) -> set[str]:
    """The fields a filter reads."""
    if tree is None:
        return set()
    if isinstance(tree, Condition):
        return {tree.field}
    return set().union(*(fields_of(part) for part in tree.parts))


def describe(tree: Filter | None) -> str:
    """A short form for logs and refusal reasons."""
    if tree is None:
        return "none"
    if isinstance(tree, Condition):
        return f"{tree.field} {tree.op} {tree.value!r}"
    joiner = " and " if isinstance(tree, All) else " or "
    return "(" + joiner.join(describe(part) for part in tree.parts) + ")"
