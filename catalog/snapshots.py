"""Snapshots: a catalog version + a reward config, materialised as an immutable folder that
`datasets.load_dataset(folder)` loads and the trainer consumes (layout: ``schemas.snapshot``).

The folder is built under a hidden temporary name, manifest.json is written last, the files are
made read-only, and one atomic rename publishes it; then the catalog records it in `snapshots`.
A snapshot that exists is never overwritten.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from catalog.card import TAGS, render_card
from catalog.store import Catalog
from schemas.errors import SnapshotError, SnapshotExistsError, UnknownSnapshotError
from schemas.ids import content_id
from schemas.snapshot import SNAPSHOT_ROW_SCHEMA, SPLIT, manifest_sha256, verify_snapshot
from schemas.token_codec import STORED_COLUMNS, decode_table
from schemas.snapshot_folder import ROW_GROUP_SIZE, SnapshotFolderWriter

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

@dataclass
class SnapshotInfo:
    name: str
    path: Path
    catalog_version: int
    reward_config_id: str
    num_rows: int
    manifest_sha256: str
    created: bool  # False when an identical snapshot already existed


_KINDS = ("sqlite", "postgres", "mysql", "duckdb")


def catalog_kind(uri: str) -> str:
    """The kind of catalog a URI names, fit to publish: 'ducklake' (a DuckDB file),
    'ducklake:sqlite', 'ducklake:postgres', ... - never its path, host, user or password."""
    parts = uri.split(":")
    if parts[0] != "ducklake":
        return parts[0] if re.fullmatch(r"[a-z][a-z0-9+.-]*", parts[0]) else "unknown"
    return f"ducklake:{parts[1]}" if len(parts) > 2 and parts[1] in _KINDS else "ducklake"


def snapshot_root(catalog: Catalog, root: str | os.PathLike | None = None) -> Path:
    return Path(root or catalog.config.snapshot_root).expanduser()


RAW = [f"ts_{c}" for c in STORED_COLUMNS]  # the summaries as stored, decoded by ``decoded_batches``


def decoded_batches(reader):
    """The snapshot rows of ``_rows_query``'s batches: the stored summaries (``ts_*``, either
    encoding) decoded to the snapshot's float columns (vectorised per batch)."""
    for batch in reader:
        table = pa.Table.from_batches([batch])
        raw = table.select(RAW).rename_columns(list(STORED_COLUMNS))
        decoded = decode_table(raw, table.column("completion_ids"))
        table = table.drop_columns(RAW)
        for name in ("student_logprobs", "teacher_logprobs", "teacher_topk_ids", "teacher_topk_logprobs"):
            table = table.append_column(name, decoded.column(name))
        yield table


def _rows_query(catalog: Catalog, version: int, iteration: int | None, run_id: str | None) -> tuple[str, list]:
    t = {name: catalog.table_ref(name, version, alias) for name, alias in
         [("rewards", "w"), ("responses", "r"), ("questions", "q"), ("iterations", "it"),
          ("images", "im"), ("token_stats", "ts")]}
    where, params = ["w.reward_config_id = $rc"], {}
    if iteration is not None:
        where.append("it.iteration = $it")
        params["it"] = iteration
    if run_id is not None:
        where.append("it.run_id = $run")
        params["run"] = run_id
    query = f"""
        SELECT r.response_id, r.group_id, r.question_id, it.iteration, r.source, r.model_id,
               r.mask_ratio, r.sample_index, q.qtype, r.prompt,
               CASE WHEN im.image_id IS NULL THEN NULL
                    ELSE {{'bytes': im.bytes, 'path': NULL::VARCHAR}} END AS image,
               q.answer, r.text AS completion, r.token_ids AS completion_ids,
               w.r_acc, w.divergence, w.r_distill, w.reward, w.advantage,
               ts.top_k, {', '.join(f'ts.{c} AS ts_{c}' for c in STORED_COLUMNS)}
        FROM {t['rewards']}
        JOIN {t['responses']} ON r.response_id = w.response_id
        JOIN {t['questions']} ON q.question_id = r.question_id
        JOIN {t['iterations']} ON it.iteration_id = r.iteration_id
        LEFT JOIN {t['images']} ON im.image_id = q.image_id
        LEFT JOIN {t['token_stats']} ON ts.stats_id = w.token_stats_id
        WHERE {' AND '.join(where)}
        ORDER BY it.iteration, r.group_id, r.source, r.sample_index"""
    return query, params


def create_snapshot(catalog: Catalog, name: str, reward_config_id: str, *,
                    version: int | None = None, iteration: int | None = None,
                    run_id: str | None = None, root: str | os.PathLike | None = None,
                    rows_per_file: int = 50_000, progress: bool = True) -> SnapshotInfo:
    """Materialise the rows rewarded under ``reward_config_id`` at ``version`` (current when
    None), optionally one iteration only, as the snapshot folder ``<root>/<name>``."""
    if not NAME_RE.match(name):
        raise SnapshotError(f"invalid snapshot name {name!r}: use letters, digits, '.', '_' and "
                            "'-' (at most 128 characters, not starting with '.' or '-')")
    requested_version = version
    version = catalog.check_version(version)
    root = snapshot_root(catalog, root)
    final = root / name
    filters = {"iteration": iteration, "run_id": run_id}
    if final.exists():
        return _existing(catalog, final, name, reward_config_id, requested_version, filters)
    elsewhere = [p for p in catalog.sql("SELECT path FROM snapshots WHERE name = $n",
                                        params={"n": name}).column(0).to_pylist()
                 if Path(p) != final.absolute()]
    if elsewhere:
        raise SnapshotExistsError(f"this catalog already has a snapshot named {name!r} at "
                                  f"{elsewhere[0]}; snapshot names are unique per catalog")

    configs = catalog.sql("SELECT * FROM reward_configs WHERE reward_config_id = $rc",
                          version=version, params={"rc": reward_config_id}).to_pylist()
    if not configs:
        known = catalog.sql("SELECT reward_config_id FROM reward_configs ORDER BY 1",
                            version=version).column(0).to_pylist()
        raise SnapshotError(f"reward config {reward_config_id!r} is not in the catalog at version "
                            f"{version}; known reward configs: {', '.join(known) or '(none)'}")
    config_row = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in configs[0].items()}

    query, params = _rows_query(catalog, version, iteration, run_id)
    params["rc"] = reward_config_id
    con = catalog.connection()
    total = int(con.execute(f"SELECT count(*) FROM ({query})", params).fetchone()[0])
    if total == 0:
        raise SnapshotError(f"no rewarded responses for reward config {reward_config_id} at "
                            f"version {version} with filters {filters}: nothing to snapshot")
    stats = con.execute(f"""SELECT source, count(*) AS n, avg(reward) AS mean_reward,
                            avg(r_acc) AS mean_r_acc, avg(divergence) AS mean_divergence,
                            count(DISTINCT group_id) AS groups
                            FROM ({query}) GROUP BY source ORDER BY source""", params
                        ).to_arrow_table().to_pylist()

    root.mkdir(parents=True, exist_ok=True)
    try:
        with SnapshotFolderWriter(final) as writer:
            reader = con.execute(query, params).to_arrow_reader(ROW_GROUP_SIZE)
            writer.write_rows(decoded_batches(reader), SNAPSHOT_ROW_SCHEMA, total, rows_per_file, progress)
            writer.write_text("README.md", render_card(
                front=writer.front_matter(SNAPSHOT_ROW_SCHEMA, TAGS), name=name, version=version,
                reward_config=config_row, filters=filters,
                num_rows=total, stats=stats, created_at=datetime.now(timezone.utc).isoformat()))
            writer.finish(name=name, catalog_version=version, reward_config_id=reward_config_id,
                          configs={"reward_config": config_row, "filters": filters,
                                   "catalog_kind": catalog_kind(catalog.config.uri)})  # no path, host or password
    except OSError as exc:
        if not final.exists():
            raise SnapshotError(f"cannot write the snapshot to {final}: {exc}") from None
        # another writer finished the same name first: same request -> return it, else refuse
        return _existing(catalog, final, name, reward_config_id, requested_version, filters)
    info = SnapshotInfo(name, final, version, reward_config_id, total, manifest_sha256(final), True)
    _register(catalog, info, iteration, run_id)
    return info


def _existing(catalog: Catalog, final: Path, name: str, reward_config_id: str,
              requested_version: int | None, filters: dict[str, Any]) -> SnapshotInfo:
    manifest = verify_snapshot(final)
    same = (manifest.reward_config_id == reward_config_id
            and manifest.configs.get("filters") == filters
            and (requested_version is None or requested_version == manifest.catalog_version))
    if not same:
        raise SnapshotExistsError(
            f"snapshot {name!r} exists at {final} (catalog version {manifest.catalog_version}, "
            f"reward config {manifest.reward_config_id}, filters {manifest.configs.get('filters')}); "
            "snapshots are never overwritten: choose another --name")
    info = SnapshotInfo(name, final, manifest.catalog_version, manifest.reward_config_id,
                        manifest.row_counts[SPLIT], manifest_sha256(final), False)
    if not catalog.read_only:
        _register(catalog, info, filters["iteration"], filters["run_id"])
    return info


def _register(catalog: Catalog, info: SnapshotInfo, iteration: int | None, run_id: str | None) -> None:
    iteration_id = None
    if iteration is not None:
        ids = catalog.sql("SELECT DISTINCT iteration_id FROM iterations WHERE iteration = $i"
                          + (" AND run_id = $r" if run_id else ""),
                          params={"i": iteration, **({"r": run_id} if run_id else {})}).column(0)
        iteration_id = ids[0].as_py() if len(ids) == 1 else None
    row = {"snapshot_id": content_id("snapshot", name=info.name), "name": info.name,
           "path": str(info.path.absolute()), "catalog_version": info.catalog_version,
           "reward_config_id": info.reward_config_id, "iteration_id": iteration_id,
           "num_rows": info.num_rows, "manifest_sha256": info.manifest_sha256,
           "created_at": datetime.now(timezone.utc)}
    catalog.append("snapshots", [row], f"snapshot {info.name}", stage="snapshot")


def find_snapshot(catalog: Catalog | None, name_or_path: str | os.PathLike,
                  root: str | os.PathLike | None = None) -> Path:
    """A snapshot folder from a path, or from a name under the snapshot root."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    base = Path(root) if root else (snapshot_root(catalog) if catalog else None)
    if base is not None and (base / str(name_or_path)).is_dir():
        return base / str(name_or_path)
    known = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if base is not None and base.is_dir() else []
    raise UnknownSnapshotError(f"no snapshot named or at {str(name_or_path)!r}; snapshots under "
                               f"{base}: {', '.join(known) or '(none)'}")
