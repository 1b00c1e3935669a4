"""Writing snapshot-format folders: Parquet shards with Hugging Face features, a dataset card, and
manifest.json written last; built under a hidden temporary name and published by one atomic
rename, files read-only. Used for catalog snapshots and for SFT data made outside a catalog."""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from schemas.errors import SnapshotError
from schemas.snapshot import DATA_DIR, MANIFEST_NAME, SPLIT, Manifest, sha256_file

ROW_GROUP_SIZE = 2048


def hf_features(schema: pa.Schema):
    """The schema as `datasets` features; a struct<bytes, path> column named image is an Image."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    if "image" in schema.names:
        features["image"] = datasets.Image()
    return features


def card_front_matter(schema: pa.Schema, num_rows: int, tags: list[str] | None = None,
                      data_glob: str = f"{DATA_DIR}/{SPLIT}-*.parquet") -> str:
    """The YAML block the Hub and `datasets` read: configs, dataset_info, tags."""
    import datasets

    info = datasets.DatasetInfo(features=hf_features(schema))
    info.splits = datasets.SplitDict()
    info.splits.add(datasets.SplitInfo(name=SPLIT, num_examples=num_rows))
    doc = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": SPLIT, "path": data_glob}]}],
        "dataset_info": info._to_yaml_dict(),
        "tags": tags or ["masters-distill"],
    }
    return "---\n" + yaml.safe_dump(doc, sort_keys=False) + "---\n"


class SnapshotFolderWriter:
    """Context manager building one snapshot folder::

        with SnapshotFolderWriter(final) as w:
            w.write_rows(batches, schema, total)
            w.write_text("README.md", card)
            w.finish(name=..., catalog_version=..., reward_config_id=..., configs={...})

    Anything raised inside removes the temporary folder; ``final`` appears only complete.
    """

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.tmp = self.final.parent / f".{self.final.name}.partial-{uuid.uuid4().hex[:8]}"
        self.files: list[str] = []
        self.num_rows = 0
        self.manifest: Manifest | None = None
        # Shard names carry a token unique to this snapshot: `datasets` caches a local folder by
        # its name and its data-file pattern only, so two snapshots called alike would otherwise
        # share (stale) cache entries in `load_dataset(folder)`.
        self.uid = uuid.uuid4().hex[:12]
        self.data_glob = f"{DATA_DIR}/{SPLIT}-{self.uid}-*.parquet"

    def __enter__(self) -> "SnapshotFolderWriter":
        if self.final.exists():
            raise SnapshotError(f"{self.final} exists; snapshots are never overwritten")
        (self.tmp / DATA_DIR).mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.manifest is None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write_rows(self, batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema,
                   total: int, rows_per_file: int = 50_000, progress: bool = False) -> None:
        """Write exactly ``total`` rows as data/train-<uid>-NNNNN-of-MMMMM.parquet shards."""
        n_files = max(1, math.ceil(total / rows_per_file))
        schema = schema.with_metadata(
            {**(schema.metadata or {}),
             b"huggingface": json.dumps({"info": {"features": hf_features(schema).to_dict()}})})
        writer, in_file, written, shards = None, 0, 0, []
        bar = tqdm(total=total, desc="snapshot rows", unit="row", disable=not progress)
        try:
            for batch in batches:
                table = (batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch]))
                table = table.select(schema.names).cast(schema)
                start = 0
                while start < table.num_rows:
                    if writer is None:
                        rel = f"{DATA_DIR}/{SPLIT}-{self.uid}-{len(shards):05d}-of-{n_files:05d}.parquet"
                        writer = pq.ParquetWriter(self.tmp / rel, schema)
                        shards.append(rel)
                    take = min(rows_per_file - in_file, table.num_rows - start)
                    writer.write_table(table.slice(start, take), row_group_size=ROW_GROUP_SIZE)
                    start, in_file, written = start + take, in_file + take, written + take
                    bar.update(take)
                    if in_file == rows_per_file:
                        writer.close()
                        writer, in_file = None, 0
        finally:
            if writer is not None:
                writer.close()
            bar.close()
        if written != total or len(shards) != n_files:
            raise SnapshotError(f"wrote {written} rows in {len(shards)} files, expected {total} "
                                f"in {n_files}: the source changed while writing; retry")
        self.files += shards
        self.num_rows += written

    def front_matter(self, schema: pa.Schema, tags: list[str] | None = None) -> str:
        """The card's YAML for the rows written so far, pointing at this snapshot's shards."""
        return card_front_matter(schema, self.num_rows, tags, self.data_glob)

    def write_text(self, rel: str, text: str) -> None:
        (self.tmp / rel).write_text(text)
        self.files.append(rel)

    def finish(self, *, name: str, catalog_version: int, reward_config_id: str,
               configs: dict[str, Any]) -> Manifest:
        """Write manifest.json (last), make files read-only, publish by an atomic rename.
        Raises FileExistsError-like OSError when ``final`` appeared meanwhile."""
        self.manifest = Manifest(
            name=name, catalog_version=catalog_version, reward_config_id=reward_config_id,
            row_counts={SPLIT: self.num_rows},
            files={rel: {"sha256": sha256_file(self.tmp / rel), "bytes": (self.tmp / rel).stat().st_size}
                   for rel in self.files},
            configs=configs, created_at=datetime.now(timezone.utc).isoformat())
        (self.tmp / MANIFEST_NAME).write_text(self.manifest.to_json())
        for rel in self.files + [MANIFEST_NAME]:
            os.chmod(self.tmp / rel, 0o444)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            self.manifest = None  # __exit__ removes the temporary folder
            raise
        return self.manifest
