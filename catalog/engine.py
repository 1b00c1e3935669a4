"""DuckDB connections with the DuckLake extension loaded and a catalog attached.

Offline, the extension comes from the PyPI packages ``duckdb-extensions`` +
``duckdb-extension-ducklake``; online, DuckDB's own ``INSTALL ducklake`` is the fallback.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from schemas.config import CatalogConfig
from schemas.errors import CatalogError, CatalogLockedError

ALIAS = "lake"
METADATA_SCHEMA = f"__ducklake_metadata_{ALIAS}"


def default_extension_directory() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "masters-distill", "duckdb_extensions")


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load a DuckDB extension: already installed, else from its PyPI package
    (``duckdb-extension-<name>``, offline), else DuckDB's own ``INSTALL`` (online)."""
    try:
        con.execute(f"LOAD {name}")
        return
    except duckdb.Error:
        pass
    try:
        import duckdb_extensions

        duckdb_extensions.import_extension(name, con=con)
        con.execute(f"LOAD {name}")
        return
    except Exception as offline_exc:  # package missing or broken: try DuckDB's own install
        try:
            con.execute(f"INSTALL {name}")
            con.execute(f"LOAD {name}")
        except duckdb.Error as online_exc:
            package = "duckdb-extension-" + name.replace("_", "-")
            raise CatalogError(
                f"cannot load DuckDB's {name} extension: the offline package failed "
                f"({offline_exc}) and `INSTALL {name}` failed ({online_exc}). Install "
                f"`duckdb-extensions` and `{package}` matching duckdb {duckdb.__version__}."
            ) from None


def extensions_for(config: CatalogConfig) -> list[str]:
    """The extensions a catalog needs: ducklake, plus the metadata database's scanner and the
    object-storage filesystem when the URI or data path asks for them."""
    rest = config.uri.removeprefix("ducklake:")
    needed = ["ducklake"]
    if rest.startswith("sqlite:"):
        needed.append("sqlite_scanner")
    elif rest.startswith("postgres:"):
        needed.append("postgres_scanner")
    if config.data_path.split("://", 1)[0] in ("s3", "gcs", "gs", "r2", "http", "https", "hf"):
        needed.append("httpfs")
    return needed


def load_extensions(con: duckdb.DuckDBPyConnection, config: CatalogConfig) -> None:
    ext_dir = config.extension_directory or default_extension_directory()
    Path(ext_dir).mkdir(parents=True, exist_ok=True)
    con.execute(f"SET extension_directory = '{_sql_str(ext_dir)}'")
    for name in extensions_for(config):
        load_extension(con, name)


def local_catalog_file(uri: str) -> Path | None:
    """The metadata file of a DuckDB- or SQLite-backed catalog, None for a server catalog."""
    rest = uri.removeprefix("ducklake:")
    if rest.startswith("postgres:") or rest.startswith("mysql:"):
        return None
    rest = rest.removeprefix("sqlite:").removeprefix("duckdb:")
    return Path(rest)


def _sqlite_wal(path: Path) -> None:
    """Put a SQLite catalog in write-ahead-log mode (a setting the file keeps): readers then never
    block a writer's COMMIT, and writers take turns through ``writer_lock``."""
    import sqlite3

    con = sqlite3.connect(path, timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<prog>\S+) \(PID (?P<pid>\d+)\)")


def attach(config: CatalogConfig, *, read_only: bool, create: bool) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the catalog attached as ``lake`` and in use."""
    if not config.uri.startswith("ducklake:"):
        raise CatalogError(f"catalog URI {config.uri!r} must start with 'ducklake:' "
                           "(e.g. ducklake:/path/catalog.ducklake or ducklake:postgres:dbname=x)")
    meta_file = local_catalog_file(config.uri)
    if meta_file is not None:
        if not meta_file.exists() and not create:
            raise CatalogError(f"no catalog at {meta_file}: create one by writing to it "
                               "(e.g. `masters --catalog DIR roundtrip`, or Catalog.open(DIR) in Python), or check --catalog")
        meta_file.parent.mkdir(parents=True, exist_ok=True)
        if config.uri.removeprefix("ducklake:").startswith("sqlite:") and not read_only:
            _sqlite_wal(meta_file)
    if "://" not in config.data_path:
        Path(config.data_path).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    load_extensions(con, config)
    options = [f"DATA_PATH '{_sql_str(config.data_path)}'", "DATA_INLINING_ROW_LIMIT 0"]
    if read_only:
        options.append("READ_ONLY")
    try:
        con.execute(f"ATTACH '{_sql_str(config.uri)}' AS {ALIAS} ({', '.join(options)})")
    except duckdb.Error as exc:
        con.close()
        m = _LOCK_RE.search(str(exc))
        if m:
            raise CatalogLockedError(
                f"the catalog {config.uri} is locked by another process (PID {m['pid']}, "
                f"{m['prog']}). A DuckDB-file catalog admits one writer process at a time: wait "
                "for it to finish, or use a ducklake:sqlite: or ducklake:postgres: catalog for "
                "concurrent workers."
            ) from None
        raise CatalogError(f"cannot attach catalog {config.uri}: {exc}") from None
    con.execute(f"USE {ALIAS}")
    if read_only:
        lock_down(con, config)
    return con


def lock_down(con: duckdb.DuckDBPyConnection, config: CatalogConfig) -> None:
    """A read-only connection reads the catalog's data files and nothing else of the file system,
    and its configuration cannot be changed back."""
    if "://" not in config.data_path:
        con.execute(f"SET allowed_directories = ['{_sql_str(config.data_path)}']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


@contextmanager
def writer_lock(config: CatalogConfig) -> Iterator[None]:
    """Held around every commit. Processes writing one SQLite-backed catalog take turns through
    an exclusive lock on ``<catalog file>.lock`` (SQLite itself would answer "database is
    locked" to a second writer's COMMIT); other catalogs need none here (a DuckDB file admits
    one writer process; PostgreSQL arbitrates its own transactions)."""
    rest = config.uri.removeprefix("ducklake:")
    if not rest.startswith("sqlite:"):
        yield
        return
    path = Path(rest.removeprefix("sqlite:") + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
