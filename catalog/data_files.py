"""Data files under a catalog's data path, written by pyarrow: by a commit in this process, or by
a shard worker in another one (which streams the path back to the process that registers it,
``CommitBuilder.add_file``). A file written and never registered is an orphan that
``Catalog.delete_orphaned_files`` removes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from catalog.conform import conform
from schemas.config import CatalogConfig
from schemas.tables import table_spec

FILE_PREFIX = "masters-"


def filesystem(data_path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a data path, and the path as a root ending in '/'."""
    root = data_path if data_path.endswith("/") else data_path + "/"
    if "://" in data_path:
        fs, _ = pafs.FileSystem.from_uri(data_path)
        return fs, root
    return pafs.LocalFileSystem(), root


def data_file_path(root: str, name: str) -> str:
    """A new, unique data file path for table ``name`` under the data root."""
    return f"{root}main/{name}/{FILE_PREFIX}{uuid.uuid4().hex}.parquet"


def write_data_file(fs: pafs.FileSystem, path: str, table: pa.Table, row_group_size: int) -> None:
    fs_path = path.split("://", 1)[1] if "://" in path else path
    if "://" not in path:
        Path(fs_path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, fs_path, filesystem=fs, row_group_size=row_group_size)


def write_table_file(config: CatalogConfig, name: str, data: pa.Table) -> str:
    """Conform ``data`` to table ``name``'s schema (SchemaMismatchError naming the column when it
    does not fit) and write it as a new data file of that table; returns its path. Needs no
    connection to the catalog: shard workers call it while one driver process registers."""
    spec = table_spec(name)
    table = conform(spec, data)
    fs, root = filesystem(config.data_path)
    path = data_file_path(root, name)
    write_data_file(fs, path, table, config.row_group_size)
    return path
