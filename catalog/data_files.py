"""Data files under a catalog's data path, written by pyarrow: by a commit in this process, or by
a shard worker in another one (which streams the path back to the process that registers it,
``CommitBuilder.add_file``). A file written and never registered is an orphan that
``Catalog.delete_orphaned_files`` removes.

A partitioned table's file holds one partition value and lives under ``<column>=<value>/`` in the
table's folder: DuckLake reads the value from that path when the file is registered, and a
commit then checks ids (and the stages read) within a partition only."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from catalog.conform import conform, iter_tables
from schemas.config import CatalogConfig
from schemas.errors import SchemaMismatchError
from schemas.tables import TableSpec, table_spec
from schemas.value_checks import ID_PATTERN, show

FILE_PREFIX = "masters-"


def filesystem(data_path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a data path, and the path as a root ending in '/'."""
    root = data_path if data_path.endswith("/") else data_path + "/"
    if "://" in data_path:
        fs, _ = pafs.FileSystem.from_uri(data_path)
        return fs, root
    return pafs.LocalFileSystem(), root


_PARTITION_VALUE = re.compile(ID_PATTERN)


def data_file_path(root: str, name: str, partition: tuple[str, str] | None = None) -> str:
    """A new, unique data file path for table ``name`` under the data root (in the folder of
    ``partition`` = (column, value) when the table is partitioned)."""
    folder = f"{root}main/{name}/" + (f"{partition[0]}={partition[1]}/" if partition else "")
    return f"{folder}{FILE_PREFIX}{uuid.uuid4().hex}.parquet"


def partition_values(spec: TableSpec, table: pa.Table) -> list[str]:
    """The distinct partition values of a conformed table (empty for an unpartitioned table);
    a value that cannot name a folder is refused, naming the row."""
    if spec.partition is None or table.num_rows == 0:
        return []
    values = pc.unique(table.column(spec.partition)).to_pylist()
    for v in values:
        if not _PARTITION_VALUE.fullmatch(v):
            row = pc.index(table.column(spec.partition), v).as_py()
            raise SchemaMismatchError(spec.name, spec.partition, f"not a content-hash id: {show(v)}; ids are "
                                      "content hashes (schemas/ids.py): letters, digits and '_.:-' only", row=row)
    return sorted(values)


def split_by_partition(spec: TableSpec, table: pa.Table) -> Iterator[tuple[tuple[str, str] | None, pa.Table]]:
    """(partition, rows) pieces of a conformed table: one per partition value, or the whole
    table for an unpartitioned one."""
    values = partition_values(spec, table)
    if spec.partition is None:
        yield None, table
    elif len(values) == 1:
        yield (spec.partition, values[0]), table
    else:
        column = table.column(spec.partition)
        for v in values:
            yield (spec.partition, v), table.filter(pc.equal(column, v))


def write_data_file(fs: pafs.FileSystem, path: str, table: pa.Table, row_group_size: int,
                    spec: TableSpec | None = None) -> None:
    """One Parquet data file, with the writer options of the table's spec (``TableSpec.parquet``)."""
    fs_path = path.split("://", 1)[1] if "://" in path else path
    if "://" not in path:
        Path(fs_path).parent.mkdir(parents=True, exist_ok=True)
    options = (spec.parquet or {}) if spec is not None else {}
    pq.write_table(table, fs_path, filesystem=fs, row_group_size=row_group_size, **options)


def write_table_files(config: CatalogConfig, name: str, data) -> list[str]:
    """Conform ``data`` (what ``CommitBuilder.append`` takes: Arrow, polars, pandas, row dicts or
    an iterable of these) to table ``name``'s schema and check its values (SchemaMismatchError
    naming the column and row when it does not fit), and write it as new data files of that
    table, one per partition; returns their paths. Needs no connection to the catalog: shard
    workers call it while one driver process registers."""
    spec = table_spec(name)
    chunks = [conform(spec, chunk) for chunk in iter_tables(data)]
    table = pa.concat_tables(chunks) if chunks else spec.schema.empty_table()
    fs, root = filesystem(config.data_path)
    paths = []
    for partition, rows in split_by_partition(spec, table):
        path = data_file_path(root, name, partition)
        write_data_file(fs, path, rows, config.row_group_size, spec)
        paths.append(path)
    return paths
