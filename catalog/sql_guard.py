"""Which SQL statements may run on the read-only path."""

from __future__ import annotations

import duckdb

from schemas.errors import ReadOnlyError

READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ReadOnlyError naming the first statement of ``query`` that is not a read."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlyError(f"cannot parse the query: {exc}") from None
    for i, st in enumerate(statements, start=1):
        if st.type not in READ_ONLY_TYPES:
            kind = st.type.name
            raise ReadOnlyError(
                f"statement {i} is a {kind} statement, which writes or changes state; the SQL "
                "path is read-only by default. Pass --write (CLI) or write=True (API) to run it.")
