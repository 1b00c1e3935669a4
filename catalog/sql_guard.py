"""Which SQL statements may run on the read-only path.

A statement passes when it is a SELECT (or an EXPLAIN of one) and calls no function that changes
the catalog (DuckLake's maintenance table functions, by their ``ducklake_`` name or as
``lake.<name>()``), runs a SQL string (``query()``, ``json_execute_serialized_sql()``), changes the
session (checkpoints, logging, profiling) or reads process memory (``arrow_scan()``).

On a connection locked down by ``catalog.engine.lock_down`` a :class:`FileScope` says which files
a statement may read: every file it names (a table function's path argument, or a file named as
a table, ``FROM 'x.csv'``) must be a string literal under the catalog's data path once ``~``,
relative paths, symbolic links and globs are resolved, and never one of the catalog's metadata
files. DuckDB's own lock-down cannot do this alone: when ``enable_external_access`` is switched
off it allows every file of an attached database (the DuckLake metadata file and its WAL) and
the temporary directory, and those lists cannot be changed afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from schemas.errors import ReadOnlyError

READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
READ_DUCKLAKE_FUNCTIONS = {
    "ducklake_snapshots", "ducklake_table_info", "ducklake_list_files", "ducklake_table_changes",
    "ducklake_table_insertions", "ducklake_table_deletions", "ducklake_current_snapshot",
    "ducklake_last_committed_snapshot", "ducklake_options", "ducklake_settings", "ducklake_scan",
}
REFUSED_FUNCTIONS = {
    "query", "json_execute_serialized_sql",  # run a SQL string, which this check cannot see
    "set_commit_message",
    "checkpoint", "force_checkpoint", "enable_logging", "disable_logging", "truncate_duckdb_logs",
    "enable_profiling", "disable_profiling",  # change the database or the session
    "arrow_scan", "arrow_scan_dumb", "pandas_scan", "python_map_function",  # read process memory
}
# table functions that read no file: their arguments are not paths (ducklake_scan reads a Parquet file)
NO_FILE_FUNCTIONS = (READ_DUCKLAKE_FUNCTIONS - {"ducklake_scan"}) | {
    "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
    "test_all_types", "test_vector_types", "icu_calendar_names",
    "pg_timezone_names", "which_secret",
}
TABLE_NAME_FUNCTIONS = {"query_table"}  # their strings are table names, files when they look like ones
# table macros that run query_table() on their first argument; the others are column names
FIRST_ARGUMENT_TABLE_FUNCTIONS = {"histogram", "histogram_values"}
NO_FILE_PREFIXES = ("duckdb_", "pragma_")  # metadata of this database; pragma_* name tables, not files
# names that are not a DuckLake catalog: a function qualified by anything else is the catalog's
# own (``lake.snapshots()`` is ``ducklake_snapshots('lake')``)
_SYSTEM_CATALOGS = {"", "system", "temp", "memory"}
_SYSTEM_SCHEMAS = {"", "main", "system", "pg_catalog", "information_schema"}
# the last part of an unquoted dotted table name that DuckDB may read as a file (FROM data.csv)
FILE_EXTENSIONS = {
    "csv", "tsv", "tbl", "txt", "text", "dat", "parquet", "json", "jsonl", "ndjson", "gz", "gzip",
    "zst", "zstd", "bz2", "xz", "db", "sqlite", "sqlite3", "duckdb", "ducklake", "wal", "xlsx",
    "arrow", "ipc", "feather", "avro", "orc", "blob", "bin", "lock", "tmp",
}
_SPACE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)  # whitespace and comments
_EXPLAIN_WORD = re.compile(r"EXPLAIN\b", re.IGNORECASE)
_EXPLAIN_OPTIONS = re.compile(r"\((?P<options>[^()]*)\)")
_ANALYZE = re.compile(r"\bANALY[SZ]E\b", re.IGNORECASE)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class FileScope:
    """The files a locked-down connection's statements may name: those under ``root`` (a
    canonical local folder ending in a separator; None: no file at all, e.g. a data path on
    object storage) other than ``forbidden`` (canonical paths: the catalog's metadata files)."""

    root: str | None
    forbidden: frozenset[str] = frozenset()

    def holds(self, path: str) -> bool:
        if self.root is None or path in self.forbidden:
            return False
        return path == self.root.rstrip(os.sep) or path.startswith(self.root)


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


def check_read_only(con: duckdb.DuckDBPyConnection, query: str, files: FileScope | None = None) -> None:
    """Raise ReadOnlyError naming the first statement of ``query`` that is not a pure read; with
    ``files`` (a locked-down connection), also the first file it names outside that scope."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlyError(f"cannot parse the query: {exc}") from None
    for i, st in enumerate(statements, start=1):
        if st.type not in READ_ONLY_TYPES:
            _refuse(i, f"a {st.type.name} statement, which writes or changes state")
        text = st.query
        if st.type == duckdb.StatementType.EXPLAIN:
            analyze, text = _explained(text)
            try:
                inner = con.extract_statements(text) if text is not None else []
            except duckdb.Error:
                inner = []
            if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
                # EXPLAIN ANALYZE runs the statement, and binding one may read files (COPY FROM)
                _refuse(i, "an EXPLAIN ANALYZE of a statement that writes (it would run it)" if analyze
                        else "an EXPLAIN of a statement other than SELECT")
        doc = select_ast(con, text)
        for node in _walk(doc):
            name = _function_name(node)
            if name in REFUSED_FUNCTIONS or (name.startswith("ducklake_") and name not in READ_DUCKLAKE_FUNCTIONS):
                _refuse(i, f"a SELECT calling {name}(), which changes the catalog or the session, runs "
                           "SQL or reads memory")
        if files is not None:
            _check_files(i, doc, files)


def _explained(text: str) -> tuple[bool, str | None]:
    """(ANALYZE or not, the statement explained) of ``EXPLAIN [(options)] [ANALYZE] statement``,
    comments allowed anywhere between; (False, None) when the text is not of that form."""
    pos = _SPACE.match(text).end()
    m = _EXPLAIN_WORD.match(text, pos)
    if not m:
        return False, None
    pos = _SPACE.match(text, m.end()).end()
    analyze = False
    m = _EXPLAIN_OPTIONS.match(text, pos)
    if m:
        analyze = bool(_ANALYZE.search(m["options"]))
        pos = _SPACE.match(text, m.end()).end()
    m = _ANALYZE.match(text, pos)
    if m:
        analyze, pos = True, m.end()
    return analyze, text[pos:]


def _function_name(node: dict) -> str:
    """A function node's name, DuckLake's own for one qualified by a catalog (``lake.x()``)."""
    name = str(node.get("function_name", "")).lower()
    if not name:
        return ""
    qualified = (str(node.get("catalog", "")).lower() not in _SYSTEM_CATALOGS
                 or str(node.get("schema", "")).lower() not in _SYSTEM_SCHEMAS)
    return "ducklake_" + name if qualified and not name.startswith("ducklake_") else name


def _check_files(i: int, doc: dict, files: FileScope) -> None:
    """Every file a statement names lies in ``files`` (see the module docstring)."""
    for node in _walk(doc):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            fn = node["function"]
            name = _function_name(fn)
            if name in NO_FILE_FUNCTIONS or name.startswith(NO_FILE_PREFIXES):
                continue
            args = fn.get("children") or []
            if name in FIRST_ARGUMENT_TABLE_FUNCTIONS:
                args = args[:1]
            for arg in args:
                if _is_named_parameter(arg):
                    continue
                for path in _literal_paths(i, name, arg, files):
                    if (name in TABLE_NAME_FUNCTIONS or name in FIRST_ARGUMENT_TABLE_FUNCTIONS) \
                            and not _looks_like_file(path.split(".")):
                        continue  # a table's name
                    _check_path(i, f"{name}()", path, files)
        elif kind in ("BASE_TABLE", "SHOW_REF"):
            path = _table_as_file(node)
            if path is not None:
                _check_path(i, "a table name", path, files)


def _is_named_parameter(arg: dict) -> bool:
    left = arg.get("left") if arg.get("type") == "COMPARE_EQUAL" else None
    return isinstance(left, dict) and left.get("type") == "COLUMN_REF" and len(left.get("column_names", [])) == 1


def _literal_paths(i: int, name: str, arg: dict, files: FileScope) -> list[str]:
    """The paths a positional argument names: a string literal or a list of them."""
    if arg.get("type") == "OPERATOR_CAST" and isinstance(arg.get("child"), dict):
        arg = arg["child"]
    if arg.get("type") == "VALUE_CONSTANT":
        value = arg.get("value") or {}
        if value.get("is_null"):
            return []
        if (value.get("type") or {}).get("id") == "VARCHAR":
            return [str(value.get("value"))]
    elif arg.get("type") == "FUNCTION" and arg.get("function_name") == "list_value":
        return [p for child in arg.get("children") or [] for p in _literal_paths(i, name, child, files)]
    where = f"files under the catalog's data path {files.root}" if files.root else "no file"
    raise ReadOnlyError(
        f"statement {i} passes a computed value to {name}(), which reads files: the read-only SQL path "
        f"reads {where}, named by string literals ('...' or ['...', ...]). Write the path out, or query "
        "the catalog's tables.")


def _table_as_file(node: dict) -> str | None:
    """The file a table reference would read (DuckDB scans ``FROM 'x.csv'`` and ``FROM data.csv``
    as files), or None for a plain table name."""
    parts = [str(node.get(k) or "").strip('"') for k in ("catalog_name", "schema_name", "table_name")]
    parts = [p for p in parts if p]
    return ".".join(parts) if parts and _looks_like_file(parts) else None


def _looks_like_file(parts: list[str]) -> bool:
    """Whether a (dotted) name DuckDB may read as a file: a path, or a name ending in a file type."""
    last = parts[-1]
    return bool(re.search(r"[/\\~:]", ".".join(parts)) or "." in last
                or (len(parts) > 1 and last.lower() in FILE_EXTENSIONS))


def _check_path(i: int, what: str, raw: str, files: FileScope) -> None:
    def refuse(why: str) -> None:
        if files.root is None:
            scope = "reads no file here (the catalog's data path is on object storage)"
        else:
            scope = f"reads only files under the catalog's data path {files.root}"
        raise ReadOnlyError(f"statement {i} reads the file {raw!r} ({what}){why}: the read-only SQL path "
                            f"{scope}. Query the catalog's tables (e.g. FROM responses) instead.")

    if files.root is None:
        refuse("")
    path = raw[len("file://"):] if raw.lower().startswith("file://") else raw
    if _URL.match(path):
        refuse(", a URL")
    if ".." in re.split(r"[/\\]+", path):
        # refused even where it would land inside: the OS resolves '..' after symbolic links
        refuse(", a path with a '..' segment (name files by their path under the data path)")
    full = os.path.abspath(os.path.expanduser(path))
    for target in _resolved(full):
        if target in files.forbidden:
            refuse(", one of the catalog's metadata files")
        if not files.holds(target):
            shown = "" if target == full else f" (it is {target})"
            refuse(f", which is outside the catalog's data path{shown}")


def _resolved(full: str) -> Iterator[str]:
    """The canonical paths (symbolic links resolved) a path or glob reaches."""
    m = _GLOB_CHARS.search(full)
    if not m:
        yield os.path.realpath(full)
        return
    yield os.path.realpath(os.path.dirname(full[:m.start()]) or os.sep)  # the folder the glob searches
    for match in glob.iglob(full, recursive=True, include_hidden=True):
        yield os.path.realpath(match)


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
