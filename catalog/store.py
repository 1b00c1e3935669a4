"""The Gen-Data catalog: one DuckLake database, one table per ``schemas.tables`` spec.

Writes go through :meth:`Catalog.commit`, a context manager whose appends land in one atomic
DuckLake snapshot with a message and structured metadata. Rows whose id is already present are
skipped and counted. Data files are written by pyarrow and registered with
``ducklake_add_data_files`` (faster than DuckDB's own writer); a crash before COMMIT leaves the
catalog at its previous version, and the unregistered files are orphans that
:meth:`Catalog.delete_orphaned_files` removes.

Concurrent writers: the appends of a commit write their Parquet files with no lock held (ids
already in the catalog are dropped first); at the end of the block the writer lock
(``catalog.locks``) is taken, the files' ids are checked again against what other writers
committed meanwhile (within the files' partitions), and the files are registered and committed.
So processes writing one shared catalog never store an id twice and lose no committed row, while
their expensive writes stay parallel.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.conform import conform, iter_tables
from catalog.data_files import data_file_path, filesystem, partition_values, split_by_partition, write_data_file
from catalog.engine import ALIAS, METADATA_SCHEMA, attach, check_local_paths, file_scope, local_catalog_file
from catalog.locks import WriterLock, writer_lock
from catalog.sql_guard import check_read_only, qualified_tables
from catalog.types import ddl_for, duckdb_type
from schemas.config import CatalogConfig
from schemas.errors import CatalogError, MastersError, SchemaMismatchError, UnknownVersionError
from schemas.tables import ALL_TABLES, TableSpec, table_spec



@dataclass
class VersionInfo:
    """One catalog version (a DuckLake snapshot)."""

    version: int
    time: datetime
    message: str | None
    metadata: dict[str, Any]
    rows_added: dict[str, int]


@dataclass
class CommitResult:
    """What a commit did: the new version (None when nothing new was added), and per table the
    rows added and the rows skipped because their id was already present."""

    version: int | None = None
    added: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


class Catalog:
    """A Gen-Data catalog. Open with :meth:`open` (read-write, creates tables) or
    :meth:`open_read_only` (shared, refuses writes)."""

    def __init__(self, config: CatalogConfig, con: duckdb.DuckDBPyConnection, read_only: bool,
                 lock: WriterLock | None = None):
        self.config = config
        self._con = con
        self.read_only = read_only
        self._in_commit = False
        self._lock = lock or writer_lock(config)
        self._fs, self._data_root = filesystem(config.data_path)
        # what the SQL path's statements may read on a locked-down (read-only) connection
        self._files = file_scope(con, config) if read_only else None

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, config: CatalogConfig | str | os.PathLike, create: bool = True) -> "Catalog":
        """Open for reading and writing (one process at a time for a DuckDB-file catalog);
        ``create=False`` refuses a catalog that does not exist yet."""
        config = _as_config(config)
        check_local_paths(config)  # before the lock file or any folder is made there
        lock = writer_lock(config)
        try:
            with lock.held():  # several workers may create a shared catalog at once
                cat = cls(config, attach(config, read_only=False, create=create), read_only=False, lock=lock)
                cat._ensure_tables()
        except BaseException:
            lock.close()
            raise
        return cat

    @classmethod
    def open_read_only(cls, config: CatalogConfig | str | os.PathLike) -> "Catalog":
        """Open for reading only, by any number of processes: writes are refused, and the
        connection is locked down (its SQL reads the catalog and files under its data path only,
        its configuration cannot be changed)."""
        config = _as_config(config)
        cat = cls(config, attach(config, read_only=True, create=False), read_only=True)
        cat._check_tables()
        return cat

    @property
    def single_writer(self) -> bool:
        """True for a DuckDB-file catalog: its one writing process is this one, so no other
        writer's files can be in flight (``delete_orphaned_files(older_than=None)`` is safe)."""
        rest = self.config.uri.removeprefix("ducklake:")
        return not self.read_only and local_catalog_file(self.config.uri) is not None and not rest.startswith("sqlite:")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._lock.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _existing_tables(self) -> dict[str, list[tuple[str, str]]]:
        rows = self._con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = 'main' ORDER BY table_name, ordinal_position",
            [ALIAS]).fetchall()
        tables: dict[str, list[tuple[str, str]]] = {}
        for t, c, d in rows:
            tables.setdefault(t, []).append((c, d))
        return tables

    def _ensure_tables(self) -> None:
        existing = self._existing_tables()
        missing = [spec for spec in ALL_TABLES if spec.name not in existing]
        added = [(spec, f) for spec in ALL_TABLES if spec.name in existing for f in spec.schema
                 if f.nullable and f.name not in {c for c, _ in existing[spec.name]}]
        if missing or added:
            self._con.execute("BEGIN")
            try:
                for spec in missing:
                    self._con.execute(ddl_for(f"{ALIAS}.{spec.name}", spec.schema))
                    if spec.partition:
                        self._con.execute(f"ALTER TABLE {ALIAS}.{spec.name} SET PARTITIONED BY ({_q(spec.partition)})")
                for spec, f in added:  # a newer version's nullable column: older rows read as null
                    self._con.execute(f"ALTER TABLE {ALIAS}.{spec.name} ADD COLUMN {_q(f.name)} {duckdb_type(f.type)}")
                self._set_commit_message("create tables" if missing else "add columns", {
                    "stage": "init", "tables": [s.name for s in missing],
                    "columns": [f"{s.name}.{f.name}" for s, f in added]})
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        self._check_tables()

    def _check_tables(self) -> None:
        existing = self._existing_tables()
        for spec in ALL_TABLES:
            if spec.name not in existing:
                if self.read_only:
                    continue  # an older catalog: the table simply has no rows yet
                raise SchemaMismatchError(spec.name, None, "table missing from the catalog")
            have = [c for c, _ in existing[spec.name]]
            for f in spec.schema:
                name = f.name
                if name not in have and not (self.read_only and f.nullable):  # read-only: an older catalog
                    raise SchemaMismatchError(
                        spec.name, name, "column missing from the catalog's table (the catalog "
                        "was made by another version of masters-distill)")

    # --- versions ------------------------------------------------------------------------------

    def current_version(self) -> int:
        return int(self._con.execute(f"SELECT max(snapshot_id) FROM {ALIAS}.snapshots()").fetchone()[0])

    def version_ids(self) -> list[int]:
        return [int(r[0]) for r in self._con.execute(
            f"SELECT snapshot_id FROM {ALIAS}.snapshots() ORDER BY 1").fetchall()]

    def check_version(self, version: int | None) -> int:
        """The version to read: ``version`` if it exists, else the current one."""
        if version is None:
            return self.current_version()
        known = self.version_ids()
        if isinstance(version, bool) or not isinstance(version, int) or version not in known:
            raise UnknownVersionError(
                f"catalog version {version!r} does not exist; versions {_ranges(known)} exist "
                "(list them with `masters versions`)")
        return version

    def table_exists_at(self, name: str, version: int) -> bool:
        return bool(self._con.execute(
            f"SELECT count(*) FROM {METADATA_SCHEMA}.ducklake_table WHERE table_name = ? AND "
            "begin_snapshot <= ? AND (end_snapshot IS NULL OR end_snapshot > ?)",
            [name, version, version]).fetchone()[0])

    def versions(self) -> list[VersionInfo]:
        snaps = self._con.execute(
            f"SELECT snapshot_id, snapshot_time, commit_message, commit_extra_info "
            f"FROM {ALIAS}.snapshots() ORDER BY snapshot_id").to_arrow_table().to_pylist()
        added = self._con.execute(
            f"SELECT f.begin_snapshot, t.table_name, sum(f.record_count)::BIGINT "
            f"FROM {METADATA_SCHEMA}.ducklake_data_file f "
            f"JOIN {METADATA_SCHEMA}.ducklake_table t ON t.table_id = f.table_id "
            f"GROUP BY ALL").fetchall()
        per_version: dict[int, dict[str, int]] = {}
        for v, t, n in added:
            per_version.setdefault(int(v), {})[t] = int(n)
        out = []
        for row in snaps:
            v, ts, msg, extra = (row["snapshot_id"], row["snapshot_time"], row["commit_message"],
                                 row["commit_extra_info"])
            try:
                meta = json.loads(extra) if extra else {}
            except json.JSONDecodeError:
                meta = {"extra_info": extra}
            out.append(VersionInfo(int(v), ts, msg, meta, per_version.get(int(v), {})))
        return out

    # --- reads (every one accepts a version) --------------------------------------------------

    def table_ref(self, name: str, version: int | None = None, alias: str | None = None) -> str:
        """SQL for reading table ``name`` at ``version`` (current when None), e.g.
        ``lake.responses AS r AT (VERSION => 3)``."""
        table_spec(name)
        ref = f"{ALIAS}.{name}" + (f" AS {alias}" if alias else "")
        if version is None:
            return ref
        return f"{ref} AT (VERSION => {self.check_version(version)})"

    def read(self, name: str, version: int | None = None, columns: Sequence[str] | None = None,
             where: str | None = None, params: Sequence[Any] | None = None) -> pa.Table:
        """Rows of a table as Arrow, in the table's schema (all or some columns)."""
        spec = table_spec(name)
        cols = list(columns) if columns else spec.columns
        for c in cols:
            if c not in spec.columns:
                raise SchemaMismatchError(name, c, "no such column")
        schema = pa.schema([spec.schema.field(c) for c in cols])
        if version is not None and not self.table_exists_at(name, self.check_version(version)):
            return schema.empty_table()  # the table did not exist yet at that version
        query = f"SELECT {', '.join(_q(c) for c in cols)} FROM {self.table_ref(name, version)}"
        if where:
            query += f" WHERE {where}"
            check_read_only(self._con, query, self._files)  # the condition is SQL: checked as sql() checks
        result = self._run(query, params).to_arrow_table()
        return result.cast(schema)

    def read_pl(self, name: str, version: int | None = None, columns: Sequence[str] | None = None,
                where: str | None = None, params: Sequence[Any] | None = None, *,
                lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
        """:meth:`read` as a polars DataFrame (same rows, columns and types), or with ``lazy=True`` a
        LazyFrame whose filters and column selections DuckDB runs in the scan when it is collected.
        A lazy frame is pinned to ``version`` (the current version when None), reads through this
        catalog's connection (so collect it before :meth:`close`) and, like every read of a
        read-only catalog, through its lock-down."""
        if not lazy:
            return pl.from_arrow(self.read(name, version, columns, where, params))
        spec = table_spec(name)
        cols = list(columns) if columns else spec.columns
        for c in cols:
            if c not in spec.columns:
                raise SchemaMismatchError(name, c, "no such column")
        schema = pl.from_arrow(pa.schema([spec.schema.field(c) for c in cols]).empty_table()).schema
        version = self.check_version(version)  # pinned: later commits do not change what it reads
        if not self.table_exists_at(name, version):
            return pl.LazyFrame(schema=schema)  # the table did not exist yet at that version
        query = f"SELECT {', '.join(_q(c) for c in cols)} FROM {self.table_ref(name, version)}"
        if where:
            query += f" WHERE {where}"
            check_read_only(self._con, query, self._files)
        try:
            # a cursor of its own (same database, same lock-down): polars may collect it on any thread
            relation = self._con.cursor().sql(query, params=list(params) if params else None)
        except duckdb.Error as exc:
            raise MastersError(f"query failed: {exc}") from None
        return _lazy_frame(relation, schema, f"table '{name}' at version {version}")

    def count(self, name: str, version: int | None = None) -> int:
        if version is not None and not self.table_exists_at(name, self.check_version(version)):
            return 0
        return int(self._run(f"SELECT count(*) FROM {self.table_ref(name, version)}").fetchone()[0])

    def _run(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None):
        try:
            return self._con.execute(query, params or [])
        except duckdb.Error as exc:
            raise MastersError(f"query failed: {exc}") from None

    def sql(self, query: str, version: int | None = None,
            params: Sequence[Any] | Mapping[str, Any] | None = None, write: bool = False) -> pa.Table:
        """Run SQL against the catalog (tables unqualified, e.g. ``SELECT * FROM responses``).

        Read-only unless ``write=True``; ``version`` runs the query against that catalog version.
        """
        if write:
            if version is not None:
                raise MastersError("a write cannot run against an old version (drop --version)")
            if self.read_only:
                raise MastersError("this catalog was opened read-only; open it for writing")
            try:
                res = self._con.execute(query, params or [])
                return res.to_arrow_table() if res.description else pa.table({})
            except duckdb.Error as exc:
                raise MastersError(f"query failed: {exc}") from None
        check_read_only(self._con, query, self._files)
        if version is not None:
            qualified = qualified_tables(self._con, query, ALIAS)
            if qualified:
                raise MastersError(
                    f"with a version, refer to tables unqualified ({qualified[0]} reads the "
                    f"current version); write {qualified[0].split('.', 1)[1]}")
        with self._reading_at(version):
            try:
                return self._con.execute(query, params or []).to_arrow_table()
            except duckdb.Error as exc:
                raise MastersError(f"query failed: {exc}") from None

    def sql_pl(self, query: str, version: int | None = None,
               params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        """:meth:`sql` (read-only: the statement check, and on a read-only catalog its lock-down)
        answered as a polars DataFrame. For a lazy frame over a table, see :meth:`read_pl`."""
        return pl.from_arrow(self.sql(query, version=version, params=params))

    @contextmanager
    def _reading_at(self, version: int | None) -> Iterator[None]:
        """Make unqualified table names resolve to the tables as of ``version``: a schema of
        views ``SELECT * FROM lake.t AT (VERSION => n)`` in the in-memory database."""
        if version is None:
            yield
            return
        version = self.check_version(version)
        schema = f"v{version}"
        self._con.execute(f"CREATE SCHEMA IF NOT EXISTS memory.{schema}")
        for spec in ALL_TABLES:
            source = (f"SELECT * FROM {ALIAS}.{_q(spec.name)} AT (VERSION => {version})"
                      if self.table_exists_at(spec.name, version)
                      else f"SELECT * FROM {ALIAS}.{_q(spec.name)} WHERE false")  # not yet created
            self._con.execute(f"CREATE OR REPLACE VIEW memory.{schema}.{_q(spec.name)} AS {source}")
        self._con.execute(f"USE memory.{schema}")
        try:
            yield
        finally:
            self._con.execute(f"USE {ALIAS}")

    def existing_ids(self, name: str, ids: pa.Array, version: int | None = None,
                     partitions: Sequence[str] | None = None) -> pa.Array:
        """The subset of ``ids`` already present in table ``name``; with ``partitions`` (values of
        the table's partition column that the ids' rows belong to) only those partitions are read."""
        spec = table_spec(name)
        if version is not None and not self.table_exists_at(name, self.check_version(version)):
            return pa.array([], pa.string())
        if len(ids) == 0:
            return pa.array([], pa.string())
        where = ""
        if partitions is not None and spec.partition:
            # literals, so that DuckLake skips the other partitions' files when planning
            where = f"{_q(spec.partition)} IN ({', '.join(_lit(v) for v in partitions)}) AND "
        probe = pa.table({"id": ids})
        self._con.register("_masters_probe", probe)
        try:
            res = self._con.execute(
                f"SELECT DISTINCT {_q(spec.id_column)} FROM {self.table_ref(name, version)} "
                f"WHERE {where}{_q(spec.id_column)} IN (SELECT id FROM _masters_probe)").to_arrow_table()
        finally:
            self._con.unregister("_masters_probe")
        return res.column(0).combine_chunks().cast(pa.string())

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The underlying DuckDB connection (``lake`` attached), for callers that stream."""
        return self._con

    # --- writes -------------------------------------------------------------------------------

    @contextmanager
    def commit(self, message: str, *, stage: str | None = None, iteration: int | None = None,
               config_hash: str | None = None, **metadata: Any) -> Iterator["CommitBuilder"]:
        """One atomic commit across tables::

            with catalog.commit("generate iter 3", stage="generate", iteration=3) as tx:
                tx.append("responses", batch)
            tx.result.version

        The appends write their files inside the block; at its end the writer lock is taken, the
        ids are checked once more and everything is registered in one DuckLake transaction, so
        ``tx.result`` is final only after the block. Any exception inside the block rolls
        everything back and deletes the files written. A commit that adds no new row creates no
        version.
        """
        if self.read_only:
            raise MastersError("this catalog was opened read-only; open it with Catalog.open()")
        if self._in_commit:
            raise MastersError("a commit is already open on this catalog; commits do not nest")
        meta = {"stage": stage, "iteration": iteration, "config_hash": config_hash, **metadata}
        meta = {k: v for k, v in meta.items() if v is not None}
        builder = CommitBuilder(self)
        self._in_commit = True
        try:
            try:
                yield builder
            except BaseException:
                builder.discard_files()
                raise
            if builder.pending:
                self._register(builder, message, meta)
        finally:
            self._in_commit = False

    def _register(self, builder: "CommitBuilder", message: str, meta: dict[str, Any]) -> None:
        """The short locked step: check the pending files' ids against the catalog as it is now,
        register them and COMMIT (or ROLLBACK when nothing is new)."""
        commit_sent = False
        try:
            with self._lock.held():
                self._con.execute("BEGIN")
                try:
                    builder.register_pending()
                    if sum(builder.result.added.values()) == 0:
                        self._con.execute("ROLLBACK")
                        builder.discard_files()
                        return
                    self._set_commit_message(message, meta)
                    commit_sent = True
                    self._con.execute("COMMIT")
                    builder.result.version = self.current_version()
                except BaseException:
                    if not commit_sent:
                        try:
                            self._con.execute("ROLLBACK")
                        except duckdb.Error:
                            pass
                    raise
        except BaseException:
            if not commit_sent:
                builder.discard_files()
            # once COMMIT was sent, the files may belong to a committed version: they stay, and
            # if the commit did not land they are orphans for delete_orphaned_files()
            raise

    def append(self, name: str, data: Any, message: str, **metadata: Any) -> CommitResult:
        """Append to one table in a commit of its own."""
        with self.commit(message, **metadata) as tx:
            tx.append(name, data)
        return tx.result

    def _set_commit_message(self, message: str, meta: dict[str, Any]) -> None:
        self._con.execute(f"CALL {ALIAS}.set_commit_message(?, ?, extra_info => ?)",
                          [_author(), message, json.dumps(meta, sort_keys=True, default=str)])

    def data_file_path(self, name: str) -> str:
        """A new, unique data file path for table ``name`` under the catalog's data path."""
        return data_file_path(self._data_root, name)

    def delete_orphaned_files(self, older_than: timedelta | None = timedelta(hours=1)) -> int:
        """Delete data files that no version references (left by a crash mid-commit) and that
        are older than ``older_than``; None deletes them all, which is only safe when no other
        process is writing to this catalog (its files in flight look orphaned too)."""
        if self.read_only:
            raise MastersError("this catalog was opened read-only; open it for writing")
        if older_than is None:
            arg = "cleanup_all => true"
        else:
            cutoff = datetime.now(timezone.utc) - older_than
            arg = f"older_than => '{cutoff.isoformat()}'::TIMESTAMPTZ"
        res = self._con.execute(
            f"SELECT count(*) FROM ducklake_delete_orphaned_files('{ALIAS}', {arg})").fetchone()
        return int(res[0])


@dataclass
class PendingFile:
    """A data file written by this commit (or handed to it), not registered yet."""

    table: str
    path: str  # as the catalog names it (a URI for object storage)
    ids: pa.Array
    partitions: list[str]


class CommitBuilder:
    """Collects the appends of one commit; see :meth:`Catalog.commit`."""

    def __init__(self, catalog: Catalog):
        self._cat = catalog
        self._files: list[str] = []  # filesystem paths this commit owns (deleted on rollback)
        self.pending: list[PendingFile] = []
        self._seen: dict[str, list[pa.Array]] = {}  # ids appended earlier in this commit, per table
        self.result = CommitResult()

    def append(self, name: str, data: Any, unique_ids: bool = False) -> tuple[int, int]:
        """Append rows (Arrow, polars, row dicts, or an iterable of batches) to table ``name``.
        Returns (added, skipped) as far as known now; rows whose id exists (in the catalog or
        earlier in this commit) are skipped, and ``tx.result`` after the block also counts the
        rows another writer committed meanwhile. Each chunk becomes one Parquet file per
        partition, so memory stays bounded by a chunk. ``unique_ids=True`` promises no id repeats
        within ``data`` (e.g. a query that yields one row per key), which skips that check; ids
        already in the catalog are still skipped."""
        spec = table_spec(name)
        added = skipped = 0
        self.result.added.setdefault(name, 0)
        self.result.skipped.setdefault(name, 0)
        earlier = list(self._seen.get(name, []))  # other appends' ids: this append's own are unique
        for chunk in iter_tables(data):
            a, s = self._append_chunk(spec, chunk, unique_ids, earlier)
            added, skipped = added + a, skipped + s
            self.result.added[name] += a  # per chunk: a later failing chunk keeps these counted
            self.result.skipped[name] += s
        return added, skipped

    def _append_chunk(self, spec: TableSpec, chunk: pa.Table, unique_ids: bool,
                      earlier: list[pa.Array]) -> tuple[int, int]:
        if chunk.num_rows == 0:
            return 0, 0
        table = conform(spec, chunk)
        ids = table.column(spec.id_column).combine_chunks()
        keep = self._new_rows(spec, ids, partition_values(spec, table), dedupe=not unique_ids,
                              seen=earlier if unique_ids else self._seen.get(spec.name, []))
        kept = table if pc.all(keep).as_py() else table.filter(keep)
        if kept.num_rows:
            self._write(spec, kept)
        return kept.num_rows, table.num_rows - kept.num_rows

    def _new_rows(self, spec: TableSpec, ids: pa.Array, parts: list[str], *, dedupe: bool,
                  seen: list[pa.Array]) -> pa.Array:
        """A mask over ``ids``: the rows to add. Not the first row of its id (when ``dedupe``),
        appended earlier in this commit (``seen``) or in the catalog (within ``parts``): skipped."""
        keep = pl.from_arrow(ids).is_first_distinct().to_arrow() if dedupe else pa.array([True] * len(ids))
        if seen:
            keep = pc.and_(keep, pc.invert(pc.is_in(ids, value_set=pa.concat_arrays(seen))))
        present = self._cat.existing_ids(spec.name, pc.filter(ids, keep), partitions=parts)
        return pc.and_(keep, pc.invert(pc.is_in(ids, value_set=present))) if len(present) else keep

    def add_file(self, name: str, path: str) -> tuple[int, int]:
        """Register a Parquet file written by another process under the catalog's data path
        (``catalog.data_files.write_table_files``, e.g. by a shard worker). Its schema must be the
        table's, and a partitioned table's file must hold one partition value and lie in that
        partition's folder. Its ids are checked as an append's are: a file whose ids are all new is
        registered as it is; otherwise its new rows are written to a file of their own and the
        original is deleted. Returns (added, skipped) as far as known now. On rollback the file
        is deleted."""
        spec = table_spec(name)
        fs_path = _fs_path(path)
        if not path.startswith(self._cat._data_root):
            raise CatalogError(f"{path} is not under the catalog's data path {self._cat._data_root}; "
                               "shard workers must write with the catalog's data path")
        self._files.append(fs_path)  # from here on it belongs to this commit: discarded on rollback
        try:
            schema = pq.read_schema(fs_path, filesystem=self._cat._fs)
        except (OSError, pa.ArrowInvalid) as exc:
            raise CatalogError(f"cannot read the data file {path} for table '{name}': {exc}") from None
        if not schema.remove_metadata().equals(spec.schema):
            raise SchemaMismatchError(name, None, f"the data file {path} does not have the table's schema")
        columns = [spec.id_column] + ([spec.partition] if spec.partition else [])
        head = pq.read_table(fs_path, columns=columns, filesystem=self._cat._fs)
        ids = head.column(spec.id_column).combine_chunks()
        parts = partition_values(spec, head)
        if spec.partition and parts and (len(parts) > 1 or f"/{spec.partition}={parts[0]}/" not in path):
            raise CatalogError(f"the data file {path} of table '{name}' must hold one {spec.partition} and lie in "
                               f"its folder ({spec.partition}=VALUE/): write it with catalog.data_files.write_table_files")
        self.result.added.setdefault(name, 0)
        self.result.skipped.setdefault(name, 0)
        keep = self._new_rows(spec, ids, parts, dedupe=True, seen=self._seen.get(name, []))
        kept = int(pc.sum(keep).as_py() or 0)
        if kept == len(ids):
            self._pend(PendingFile(name, path, ids, parts))
        else:
            if kept:
                self._write(spec, pq.read_table(fs_path, filesystem=self._cat._fs).filter(keep))
            self._files.remove(fs_path)
            self._cat._fs.delete_file(fs_path)
        self.result.added[name] += kept
        self.result.skipped[name] += len(ids) - kept
        return kept, len(ids) - kept

    def _write(self, spec: TableSpec, table: pa.Table) -> None:
        """Write new rows of this commit as files (one per partition), pending registration."""
        for partition, rows in split_by_partition(spec, table):
            path = data_file_path(self._cat._data_root, spec.name, partition)
            self._files.append(_fs_path(path))
            write_data_file(self._cat._fs, path, rows, self._cat.config.row_group_size, spec)
            self._pend(PendingFile(spec.name, path, rows.column(spec.id_column).combine_chunks(),
                                   [partition[1]] if partition else []))

    def _pend(self, f: PendingFile) -> None:
        self.pending.append(f)
        self._seen.setdefault(f.table, []).append(f.ids)  # later appends of this commit skip them

    def register_pending(self) -> None:
        """Inside the locked transaction: drop from each pending file the ids committed by
        others since it was written (rewriting the file, rarely), and register the files."""
        recheck = not self._cat.single_writer  # a DuckDB-file catalog has no other writer
        for f in list(self.pending):
            spec = table_spec(f.table)
            present = (self._cat.existing_ids(f.table, f.ids, partitions=f.partitions or None)
                       if recheck else pa.array([], pa.string()))
            if len(present):
                keep = pc.invert(pc.is_in(f.ids, value_set=present))
                table = pq.read_table(_fs_path(f.path), filesystem=self._cat._fs).filter(keep)
                self._cat._fs.delete_file(_fs_path(f.path))
                self._files.remove(_fs_path(f.path))
                self.result.added[f.table] -= len(present)
                self.result.skipped[f.table] += len(present)
                if table.num_rows == 0:
                    continue
                path = data_file_path(self._cat._data_root, f.table,
                                      (spec.partition, f.partitions[0]) if f.partitions else None)
                self._files.append(_fs_path(path))
                write_data_file(self._cat._fs, path, table, self._cat.config.row_group_size, spec)
                f = PendingFile(f.table, path, table.column(spec.id_column).combine_chunks(), f.partitions)
            self._register(f.table, f.path)

    def _register(self, name: str, path: str) -> None:
        try:
            self._cat._con.execute(f"CALL ducklake_add_data_files('{ALIAS}', ?, ?)", [name, path])
        except duckdb.Error as exc:
            raise CatalogError(f"registering {path} in table '{name}' failed: {exc}") from None

    def discard_files(self) -> None:
        for path in self._files:
            try:
                self._cat._fs.delete_file(path)
            except (OSError, FileNotFoundError):
                pass
        self._files.clear()
        self.pending.clear()


def _as_config(config: CatalogConfig | str | os.PathLike) -> CatalogConfig:
    if isinstance(config, CatalogConfig):
        return config
    path = Path(config).expanduser()
    if path.exists() and not path.is_dir():
        hint = (f" (it is a catalog's metadata file: pass its folder {path.parent})"
                if path.name == "catalog.ducklake" else "")
        raise CatalogError(f"the catalog {path} is a file{hint}: it must be a catalog folder (holding catalog.ducklake, "
                           "data/ and snapshots/; created when missing) or a CatalogConfig with a ducklake: URI")
    return CatalogConfig.for_directory(str(config))


def _lazy_frame(relation: duckdb.DuckDBPyRelation, schema: pl.Schema, what: str) -> pl.LazyFrame:
    """A LazyFrame over a DuckDB relation in ``schema``'s types. DuckDB's own polars source runs
    the column selections, row limits and filters polars pushes down (``relation.pl(lazy=True)``);
    this source in front of it turns DuckDB's errors at collect time into CatalogError."""
    from polars.io.plugins import register_io_source

    inner = relation.pl(lazy=True)
    have = inner.collect_schema()
    fix = {c: t for c, t in schema.items() if have.get(c) != t}  # e.g. time zone 'Etc/UTC' -> 'UTC'
    if fix:
        inner = inner.cast(fix)

    def source(with_columns, predicate, n_rows, batch_size):
        frame = inner
        if with_columns is not None:
            frame = frame.select(with_columns)
        if predicate is not None:
            frame = frame.filter(predicate)  # pushed on into DuckDB's source
        if n_rows is not None:
            frame = frame.head(n_rows)
        try:
            yield frame.collect()
        except duckdb.Error as exc:
            raise CatalogError(f"reading {what} failed: {exc}. A lazy frame reads through its catalog's "
                               "connection: collect it before closing the catalog.") from None

    return register_io_source(source, schema=schema, is_pure=True)


def _fs_path(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def _ranges(values: list[int]) -> str:
    """[0,1,2,5,6] -> '0..2, 5..6'."""
    if not values:
        return "(none)"
    out, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}..{prev}" if prev != start else f"{start}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _author() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
