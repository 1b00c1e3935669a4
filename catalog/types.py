"""Arrow -> DuckDB type names, for CREATE TABLE from a schema."""

from __future__ import annotations

import pyarrow as pa


def duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    simple = {pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER",
              pa.int64(): "BIGINT", pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT",
              pa.uint32(): "UINTEGER", pa.uint64(): "UBIGINT", pa.float32(): "FLOAT",
              pa.float64(): "DOUBLE"}
    if t in simple:
        return simple[t]
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return duckdb_type(t.value_type) + "[]"
    if pa.types.is_struct(t):
        inner = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in t)
        return f"STRUCT({inner})"
    raise TypeError(f"no DuckDB type for Arrow type {t}")


def ddl_for(qualified_name: str, schema: pa.Schema) -> str:
    cols = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in schema)
    return f"CREATE TABLE {qualified_name} ({cols})"
