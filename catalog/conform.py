"""Bring incoming data to a table's Arrow schema and check its values (``schemas.value_checks``),
or say exactly which column (and, where one row is at fault, which row) is wrong."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import InputError, SchemaMismatchError
from schemas.tables import TableSpec
from schemas.value_checks import check_values, show

ROW_OFFSET = b"masters.first_row"  # schema metadata of a chunk: its first row's index in the data appended
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError,
                      OverflowError)
_TYPE_FIX = "give every row a value of the column's type (`masters tables` lists them)"


class Rows:
    """Row-wise data (a list of row dicts, a pandas DataFrame) not yet typed: ``conform`` converts
    it column by column for its table, so that a value of the wrong type is named with its row."""

    def __init__(self, columns: dict[str, Any], num_rows: int, first_row: int = 0, pandas: bool = False,
                 bad_row: tuple[int, type] | None = None):
        self.columns, self.num_rows, self.first_row, self.pandas = columns, num_rows, first_row, pandas
        self.bad_row = bad_row  # (row, its type): an item of a row list that is not a dict

    @classmethod
    def from_dicts(cls, rows: list) -> "Rows":
        bad = next(((i, type(r)) for i, r in enumerate(rows) if not isinstance(r, dict)), None)
        if bad is not None:
            return cls({}, len(rows), bad_row=bad)
        names = list(rows[0])  # the first row's order, then any key only later rows have
        names += sorted(set().union(*rows).difference(names), key=str)
        return cls({n: [r.get(n) for r in rows] for n in names}, len(rows))

    @classmethod
    def from_pandas(cls, frame) -> "Rows":
        return cls({str(c): frame[c] for c in frame.columns}, len(frame), pandas=True)


def _chunks(data: Any) -> Iterator[pa.Table | Rows]:
    if isinstance(data, pa.Table):
        yield data
    elif isinstance(data, pa.RecordBatch):
        yield pa.Table.from_batches([data])
    elif isinstance(data, pa.RecordBatchReader):
        for batch in data:
            yield pa.Table.from_batches([batch])
    elif _is_pandas(data):
        if len(data):
            yield Rows.from_pandas(data)
    elif hasattr(data, "to_arrow") and not isinstance(data, (list, tuple)):  # polars
        yield data.to_arrow()
    elif isinstance(data, list) and (not data or isinstance(data[0], dict)):
        if data:
            yield Rows.from_dicts(data)
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        for item in data:
            yield from _chunks(item)
    else:
        raise InputError(f"cannot append data of type {type(data).__name__}: give a pyarrow Table, RecordBatch "
                         "or RecordBatchReader, a polars or pandas DataFrame, a list of row dicts, or an "
                         "iterable of these")


def _is_pandas(data: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(data, pd.DataFrame)


def iter_tables(data: Any) -> Iterator[pa.Table | Rows]:
    """Accept a pyarrow Table / RecordBatch / RecordBatchReader, a polars or pandas DataFrame, a
    list of row dicts, or an iterable of any of these; yield chunks for ``conform``: pyarrow
    Tables, or ``Rows`` (row-wise data, typed by ``conform`` for its table). A chunk after the
    first carries its first row's index in ``data``, so that an error names the row of ``data``."""
    offset = 0
    for chunk in _chunks(data):
        if offset:
            if isinstance(chunk, Rows):
                chunk.first_row = offset
            else:
                chunk = chunk.replace_schema_metadata({**(chunk.schema.metadata or {}), ROW_OFFSET: str(offset)})
        offset += chunk.num_rows
        yield chunk


def _first_failing_row(n: int, fails: Callable[[int], bool]) -> int:
    """The row at which ``fails(m)`` (do rows [0, m) fail?) turns true; ``fails(n)`` is true."""
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi - 1


def _fails(convert: Callable[[], Any]) -> bool:
    try:
        convert()
    except _CONVERSION_ERRORS:
        return True
    return False


def _take(values: Any, m: int) -> Any:
    return values.iloc[:m] if hasattr(values, "iloc") else values[:m]


def _typed_column(spec: TableSpec, name: str, values: Any, pandas: bool, offset: int) -> pa.Array:
    """A column of row-wise values: inferred as Arrow would (the cast to the table's type comes
    after, as for any table), else converted straight to the table's type; a value neither way
    takes is named with its row."""
    try:
        return pa.array(values, from_pandas=pandas)
    except _CONVERSION_ERRORS:
        pass
    if name not in spec.schema.names:
        raise SchemaMismatchError(spec.name, name, "unknown column (the table has no such column)")
    target = spec.schema.field(name).type
    try:
        return pa.array(values, type=target, from_pandas=pandas)
    except _CONVERSION_ERRORS:
        pass
    row = _first_failing_row(len(values), lambda m: _fails(
        lambda: pa.array(_take(values, m), type=target, from_pandas=pandas)))
    bad = values.iloc[row] if hasattr(values, "iloc") else values[row]
    raise SchemaMismatchError(spec.name, name, f"a {type(bad).__name__} where the column holds {target}: "
                              f"{show(bad)}; {_TYPE_FIX}", row=offset + row)


def _from_rows(spec: TableSpec, rows: Rows) -> pa.Table:
    if rows.bad_row is not None:
        row, kind = rows.bad_row
        raise SchemaMismatchError(spec.name, None, f"not a dict of column values: a {kind.__name__}; give every "
                                  "row as a dict {column: value}", row=rows.first_row + row)
    extra = [n for n in rows.columns if n not in spec.schema.names]
    if extra:
        raise SchemaMismatchError(spec.name, extra[0], "unknown column (the table has no such column)")
    arrays = {n: _typed_column(spec, n, v, rows.pandas, rows.first_row) for n, v in rows.columns.items()}
    return pa.Table.from_pydict(arrays)


def _cast(spec: TableSpec, field: pa.Field, column: pa.ChunkedArray, offset: int) -> pa.ChunkedArray:
    try:
        return column.cast(field.type, safe=True)
    except _CONVERSION_ERRORS as exc:
        detail = str(exc).splitlines()[0]
    row = _first_failing_row(len(column), lambda m: _fails(lambda: column.slice(0, m).cast(field.type, safe=True)))
    raise SchemaMismatchError(spec.name, field.name, f"expected {field.type}, got {column.type} ({detail}): "
                              f"{show(column[row].as_py())}; {_TYPE_FIX}", row=offset + row)


def conform(spec: TableSpec, table: pa.Table | Rows) -> pa.Table:
    """Return ``table`` with exactly the spec's columns, in order, cast to the spec's types, its
    values checked (``schemas.value_checks``). A missing nullable column (data from before the
    column existed) is filled with nulls; missing required, unknown, non-castable or
    null-in-required columns, and values the checks refuse, raise SchemaMismatchError."""
    if isinstance(table, Rows):
        offset = table.first_row
        table = _from_rows(spec, table)
    else:
        offset = int((table.schema.metadata or {}).get(ROW_OFFSET, 0))
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
            column = _cast(spec, field, column, offset)
        if not field.nullable and column.null_count:
            row = pc.index(column.is_null(), True).as_py()
            raise SchemaMismatchError(spec.name, field.name,
                                      f"null value in a required column ({column.null_count} in all): None; "
                                      f"every row needs a {field.name}", row=offset + row)
        arrays.append(column)
    out = pa.Table.from_arrays(arrays, schema=spec.schema)
    check_values(spec, out, row_offset=offset)
    return out

