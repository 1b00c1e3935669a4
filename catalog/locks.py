"""The writer lock of a shared catalog: held only around a commit's short id-check-and-register
step (and around opening, when a new catalog's tables are created), so that processes writing
one catalog at once never both pass the id check for the same row.

- DuckDB-file catalog: none needed (DuckDB admits one writer process).
- SQLite catalog: an exclusive ``flock`` on ``<catalog file>.lock`` beside it.
- PostgreSQL catalog: a session-level advisory lock (``pg_advisory_lock``) on a connection of
  its own (``psycopg``, the ``cluster`` extra).

Both locks belong to the process holding them: when it dies (even by SIGKILL) the kernel or the
server releases them, so a crashed writer never blocks the others.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from schemas.config import CatalogConfig
from schemas.errors import CatalogError


class WriterLock(Protocol):
    def held(self) -> Iterator[None]: ...  # a context manager

    def close(self) -> None: ...


class NoLock:
    @contextmanager
    def held(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass


class FileLock:
    """``flock`` on a file beside a SQLite catalog."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def held(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def close(self) -> None:
        pass


# one key per PostgreSQL database: a DuckLake catalog owns its database's metadata tables
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"masters-distill catalog commit").digest()[:8], "big", signed=True)


class PostgresAdvisoryLock:
    """``pg_advisory_lock`` on a connection opened once per catalog (libpq reads the usual
    PGPASSWORD / PGSSLMODE / ~/.pgpass environment, as DuckDB's postgres extension does)."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self._con = None

    def _connection(self):
        if self._con is None or self._con.closed:
            try:
                import psycopg
            except ImportError:
                raise CatalogError("a ducklake:postgres: catalog needs psycopg for its writer lock: "
                                   "pip install 'masters-distill[cluster]' (or psycopg[binary])") from None
            try:
                self._con = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=30)
            except psycopg.Error as exc:
                raise CatalogError(f"cannot connect to the catalog's PostgreSQL server ({_first_line(exc)}); "
                                   "check the conninfo after 'ducklake:postgres:'") from None
        return self._con

    @contextmanager
    def held(self) -> Iterator[None]:
        con = self._connection()
        con.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_KEY])
        try:
            yield
        finally:
            if not con.closed:
                con.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_KEY])

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def writer_lock(config: CatalogConfig) -> WriterLock:
    """The writer lock of the catalog ``config`` names (see the module docstring)."""
    rest = config.uri.removeprefix("ducklake:")
    if rest.startswith("sqlite:"):
        return FileLock(Path(rest.removeprefix("sqlite:") + ".lock"))
    if rest.startswith("postgres:"):
        return PostgresAdvisoryLock(rest.removeprefix("postgres:"))
    return NoLock()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
