"""Printing Arrow results: a terminal table, CSV, JSON lines or Parquet."""

from __future__ import annotations

import base64
import io
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from schemas.errors import MastersError

FORMATS = ("table", "csv", "json", "parquet")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any, width: int = 120) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = json.dumps(_plain(value)) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def write_result(table: pa.Table, fmt: str, output: Path | None = None, max_rows: int = 200) -> None:
    if fmt not in FORMATS:
        raise MastersError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if output is None:
            raise MastersError("--format parquet needs --output FILE")
        pq.write_table(table, output)
        return
    if fmt == "csv":
        flat = pa.table({n: (c if not (pa.types.is_nested(c.type) or pa.types.is_binary(c.type))
                             else pa.array([json.dumps(_plain(v)) for v in c.to_pylist()]))
                         for n, c in zip(table.column_names, table.columns)})
        buf = io.BytesIO()
        pacsv.write_csv(flat, buf)
        _emit(buf.getvalue().decode(), output)
        return
    if fmt == "json":
        lines = [json.dumps(_plain(r)) for r in table.to_pylist()]
        _emit("\n".join(lines) + ("\n" if lines else ""), output)
        return
    rich_table = Table(show_lines=False)
    for name in table.column_names:
        rich_table.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        rich_table.add_row(*[_cell(v) for v in row.values()])
    sink = open(output, "w") if output else sys.stdout
    try:
        console = Console(file=sink, width=200)
        console.print(rich_table)
        if table.num_rows > max_rows:
            console.print(f"({table.num_rows} rows, first {max_rows} shown; use --format csv/json/parquet for all)")
        else:
            console.print(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    finally:
        if output:
            sink.close()


def _emit(text: str, output: Path | None) -> None:
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
