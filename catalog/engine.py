"""DuckDB connections with the DuckLake extension loaded and a catalog attached.

Offline, the extension comes from the PyPI packages ``duckdb-extensions`` +
``duckdb-extension-ducklake``; online, DuckDB's own ``INSTALL ducklake`` is the fallback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import duckdb

from catalog.sql_guard import FileScope
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
    if config.data_path.startswith("s3://"):
        secret = s3_secret_sql(os.environ)
        if secret:
            con.execute(secret)


def s3_endpoint(env: Mapping[str, str]) -> str | None:
    """The S3 endpoint URL the AWS environment names (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL),
    None for AWS itself. pyarrow's S3 filesystem reads the same variables."""
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def s3_secret_sql(env: Mapping[str, str]) -> str | None:
    """A temporary (this connection only) DuckDB S3 secret from the usual AWS environment:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (or
    AWS_DEFAULT_REGION) and the endpoint (:func:`s3_endpoint`; path-style URLs then, as S3-compatible
    servers expect). None without AWS_ACCESS_KEY_ID: DuckDB's own persistent secrets apply. The
    credentials stay in this process: nothing here is written to the catalog or printed."""
    key = env.get("AWS_ACCESS_KEY_ID")
    if not key:
        return None
    parts = [("KEY_ID", key), ("SECRET", env.get("AWS_SECRET_ACCESS_KEY", ""))]
    if env.get("AWS_SESSION_TOKEN"):
        parts.append(("SESSION_TOKEN", env["AWS_SESSION_TOKEN"]))
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        parts.append(("REGION", region))
    endpoint = s3_endpoint(env)
    if endpoint:
        scheme, _, host = endpoint.partition("://") if "://" in endpoint else ("https", "", endpoint)
        parts += [("ENDPOINT", host.rstrip("/")), ("URL_STYLE", "path")]
        use_ssl = "true" if scheme == "https" else "false"
    else:
        use_ssl = "true"
    body = ", ".join(f"{k} '{_sql_str(v)}'" for k, v in parts)
    return f"CREATE OR REPLACE TEMPORARY SECRET masters_s3 (TYPE s3, {body}, USE_SSL {use_ssl})"


_PASSWORD_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(uri: str) -> str:
    """A URI fit for a message or a log line: a conninfo's password, and the password of any
    ``scheme://user:password@host`` (the user may be empty), hidden."""
    uri = _PASSWORD_RE.sub(r"\1***", uri)
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^/\s]+@", r"\1***@", uri)


def local_catalog_file(uri: str) -> Path | None:
    """The metadata file of a DuckDB- or SQLite-backed catalog, None for a server catalog."""
    rest = uri.removeprefix("ducklake:")
    if rest.startswith("postgres:") or rest.startswith("mysql:"):
        return None
    rest = rest.removeprefix("sqlite:").removeprefix("duckdb:")
    return Path(rest)


def check_local_paths(config: CatalogConfig) -> None:
    """Refuse a catalog whose metadata file or data path lies under a file (``--catalog notes.txt``):
    a CatalogError naming it, before anything tries to create folders there."""
    meta_file = local_catalog_file(config.uri)
    if meta_file is not None:
        blocker = _file_in_the_way(meta_file.parent)
        if blocker is not None:
            hint = (f" ({blocker.name} is a catalog's metadata file: pass its folder {blocker.parent})"
                    if blocker.name == "catalog.ducklake" else "")
            raise CatalogError(
                f"{blocker} is a file, not a folder{hint}, so the catalog {meta_file} cannot live there: --catalog "
                "(Catalog.open) must name a catalog folder (holding catalog.ducklake, data/ and snapshots/; "
                "created when missing) or a ducklake: URI")
        if meta_file.is_dir():
            raise CatalogError(f"the catalog's metadata file {meta_file} is a folder: pass the folder that "
                               "holds catalog.ducklake, or a ducklake: URI naming the metadata file")
    if "://" not in config.data_path:
        blocker = _file_in_the_way(Path(config.data_path))
        if blocker is not None:
            raise CatalogError(f"the data path {config.data_path} cannot be used: {blocker} is a file, not a "
                               "folder. Pass a folder with --data-path (or the catalog folder's data/)")


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is not a folder."""
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


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
        raise CatalogError(f"catalog URI {redact(config.uri)!r} must start with 'ducklake:' "
                           "(e.g. ducklake:/path/catalog.ducklake or ducklake:postgres:dbname=x)")
    check_local_paths(config)
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
    # the data path is the configuration's, not the one stored at creation: a copied or moved
    # folder catalog opens where it is (data file paths are stored relative to it), and
    # --data-path repoints any catalog (check_data_path refuses a path holding none of its files)
    options = [f"DATA_PATH '{_sql_str(config.data_path)}'", "OVERRIDE_DATA_PATH true",
               "DATA_INLINING_ROW_LIMIT 0"]
    if read_only:
        options.append("READ_ONLY")
    try:
        con.execute(f"ATTACH '{_sql_str(config.uri)}' AS {ALIAS} ({', '.join(options)})")
    except duckdb.Error as exc:
        con.close()
        m = _LOCK_RE.search(str(exc))
        if m:
            raise CatalogLockedError(
                f"the catalog {redact(config.uri)} is locked by another process (PID {m['pid']}, "
                f"{m['prog']}). A DuckDB-file catalog admits one writer process at a time: wait "
                "for it to finish, or use a ducklake:sqlite: or ducklake:postgres: catalog for "
                "concurrent workers."
            ) from None
        raise CatalogError(f"cannot attach catalog {redact(config.uri)}: {redact(str(exc))}") from None
    try:
        check_data_path(con, config)
    except BaseException:
        con.close()
        raise
    con.execute(f"USE {ALIAS}")
    if read_only:
        lock_down(con, config)
    return con


def stored_data_path(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute(f"SELECT value FROM {METADATA_SCHEMA}.ducklake_metadata WHERE key = 'data_path'").fetchone()
    return row[0] if row else None


def check_data_path(con: duckdb.DuckDBPyConnection, config: CatalogConfig) -> None:
    """Refuse a local data path other than the stored one that holds none of the catalog's data
    files (a typo, or a catalog copied without its data folder): reads would fail file by file."""
    stored = stored_data_path(con)
    given = config.data_path
    if stored is None or stored.rstrip("/") == given.rstrip("/") or "://" in given:
        return
    has_files = con.execute(f"SELECT count(*) FROM {METADATA_SCHEMA}.ducklake_data_file").fetchone()[0]
    if has_files and not (Path(given) / "main").is_dir():
        raise CatalogError(
            f"the catalog's data files were written under {stored}, and the data path {given} holds "
            "none of them (no main/ folder): pass the folder that holds them with --data-path, or "
            "copy the catalog together with its data folder")


def lock_down(con: duckdb.DuckDBPyConnection, config: CatalogConfig) -> None:
    """A read-only connection reads the catalog's data files and nothing else of the file system,
    and its configuration cannot be changed back.

    DuckDB resolves ``..`` and symbolic links before checking a path against
    ``allowed_directories`` (given here canonical, ending in a separator), but switching external
    access off also allows the files of every attached database (the DuckLake metadata file and
    its WAL) and the temporary directory, which cannot be taken back: the SQL path's statement
    check (``catalog.sql_guard``, with :func:`file_scope`) refuses those."""
    root = local_data_root(config)
    if root is not None:
        con.execute(f"SET allowed_directories = ['{_sql_str(root)}']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def local_data_root(config: CatalogConfig) -> str | None:
    """The canonical local data path, ending in a separator; None for object storage."""
    if "://" in config.data_path:
        return None
    return os.path.join(os.path.realpath(config.data_path), "")


def file_scope(con: duckdb.DuckDBPyConnection, config: CatalogConfig) -> FileScope:
    """What the statements of a locked-down connection may read: the data path, less the files
    DuckDB allowed on its own (the metadata database's, see :func:`lock_down`)."""
    allowed = con.execute("SELECT current_setting('allowed_paths')").fetchone()[0] or []
    forbidden = {os.path.realpath(p) for p in allowed}
    meta_file = local_catalog_file(config.uri)
    if meta_file is not None:
        base = os.path.realpath(meta_file)
        forbidden |= {base, *(base + s for s in (".wal", ".wal.recovery", ".wal.checkpoint", "-wal", "-shm",
                                                 "-journal", ".lock"))}
    return FileScope(local_data_root(config), frozenset(forbidden))
