"""Bring incoming data to a table's Arrow schema, or say exactly which column is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from schemas.errors import SchemaMismatchError
from schemas.tables import TableSpec


def iter_tables(data: Any) -> Iterator[pa.Table]:
    """Accept a pyarrow Table / RecordBatch / RecordBatchReader, a polars DataFrame, a list of
    row dicts, or an iterable of any of these; yield pyarrow Tables."""
    if isinstance(data, pa.Table):
        yield data
    elif isinstance(data, pa.RecordBatch):
        yield pa.Table.from_batches([data])
    elif isinstance(data, pa.RecordBatchReader):
        for batch in data:
            yield pa.Table.from_batches([batch])
    elif hasattr(data, "to_arrow") and not isinstance(data, (list, tuple)):  # polars
        yield data.to_arrow()
    elif isinstance(data, list) and (not data or isinstance(data[0], dict)):
        if data:
            yield pa.Table.from_pylist(data)
    elif isinstance(data, Iterable):
        for item in data:
            yield from iter_tables(item)
    else:
        raise TypeError(f"cannot append data of type {type(data).__name__}")


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """Return ``table`` with exactly the spec's columns, in order, cast to the spec's types. A
    missing nullable column (data from before the column existed) is filled with nulls; missing
    required, unknown, non-castable or null-in-required columns raise SchemaMismatchError."""
    for field in spec.schema:
        if field.nullable and field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    have = set(table.column_names)
    missing = [n for n in spec.schema.names if n not in have]
    if missing:
        raise SchemaMismatchError(spec.name, missing[0],
                                  f"missing column (expected columns: {', '.join(spec.columns)})")
    extra = [n for n in table.column_names if n not in spec.schema.names]
    if extra:
        raise SchemaMismatchError(spec.name, extra[0], "unknown column (the table has no such column)")
    arrays = []
    for field in spec.schema:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    spec.name, field.name,
                    f"expected {field.type}, got {column.type} ({str(exc).splitlines()[0]})") from None
        if not field.nullable and column.null_count:
            raise SchemaMismatchError(spec.name, field.name,
                                      f"{column.null_count} null value(s) in a required column")
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=spec.schema)
