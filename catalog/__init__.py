"""The versioned Gen-Data catalog: DuckLake (DuckDB + Parquet) with atomic multi-table commits,
idempotent appends, time travel, read-only SQL and immutable snapshots."""

from catalog.store import Catalog, CommitResult, VersionInfo

__all__ = ["Catalog", "CommitResult", "VersionInfo"]
