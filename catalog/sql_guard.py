"""Which SQL statements may run on the read-only path.

A statement passes when it is a SELECT (or an EXPLAIN of one, not EXPLAIN ANALYZE of a write),
and calls no function that changes the catalog (DuckLake's maintenance table functions, which a
SELECT can invoke) nor ``query()`` (which runs a SQL string). Connections opened read-only are
also locked down (no file access outside the data path, configuration locked) by the engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import duckdb

from schemas.errors import ReadOnlyError

READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
READ_DUCKLAKE_FUNCTIONS = {
    "ducklake_snapshots", "ducklake_table_info", "ducklake_list_files", "ducklake_table_changes",
    "ducklake_table_insertions", "ducklake_table_deletions", "ducklake_current_snapshot",
    "ducklake_last_committed_snapshot", "ducklake_options", "ducklake_settings", "ducklake_scan",
}
REFUSED_FUNCTIONS = {"query", "set_commit_message"}
_EXPLAIN_ANALYZE = re.compile(r"^\s*EXPLAIN\s+ANALY[SZ]E\s+(?P<inner>.*)$", re.IGNORECASE | re.DOTALL)


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def select_ast(con: duckdb.DuckDBPyConnection, query: str) -> dict:
    doc = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    if doc.get("error"):
        raise ReadOnlyError(f"cannot parse the query: {doc.get('error_message', doc)}")
    return doc


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ReadOnlyError naming the first statement of ``query`` that is not a pure read."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlyError(f"cannot parse the query: {exc}") from None
    for i, st in enumerate(statements, start=1):
        if st.type not in READ_ONLY_TYPES:
            _refuse(i, f"a {st.type.name} statement, which writes or changes state")
        text = st.query
        if st.type == duckdb.StatementType.EXPLAIN:
            m = _EXPLAIN_ANALYZE.match(text)
            if not m:
                continue  # a plain EXPLAIN runs nothing
            inner = con.extract_statements(m["inner"])
            if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
                _refuse(i, "an EXPLAIN ANALYZE of a statement that writes (it would run it)")
            text = m["inner"]
        for node in _walk(select_ast(con, text)):
            name = str(node.get("function_name", "")).lower()
            if name in REFUSED_FUNCTIONS or (name.startswith("ducklake_")
                                             and name not in READ_DUCKLAKE_FUNCTIONS):
                _refuse(i, f"a SELECT calling {name}(), which changes the catalog or runs SQL")


def qualified_tables(con: duckdb.DuckDBPyConnection, query: str, catalog: str) -> list[str]:
    """Tables in ``query`` (SELECTs only) qualified with the database name ``catalog``."""
    found = []
    for st in con.extract_statements(query):
        if st.type != duckdb.StatementType.SELECT:
            continue
        for node in _walk(select_ast(con, st.query)):
            if node.get("type") == "BASE_TABLE" and node.get("catalog_name") == catalog:
                found.append(f"{catalog}.{node.get('table_name')}")
            elif node.get("type") == "BASE_TABLE" and node.get("schema_name") == catalog:
                found.append(f"{catalog}.{node.get('table_name')}")
    return found


def _refuse(i: int, what: str) -> None:
    raise ReadOnlyError(f"statement {i} is {what}; the SQL path is read-only by default. Pass "
                        "--write (CLI) or write=True (API) to run it.")
