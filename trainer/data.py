"""Reading snapshot folders for training: verify the manifest, load with `datasets`, shape rows
into TRL's conversational prompt-completion format with the image beside them."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from schemas.errors import SnapshotError
from schemas.snapshot import DATA_DIR, SFT_COLUMNS, Manifest, manifest_sha256, verify_snapshot


def load_verified(folder: str | os.PathLike) -> tuple[datasets.Dataset, Manifest, str]:
    """The snapshot's rows, its manifest and the manifest's sha256, after checking every file.
    A missing, changed or incomplete file raises SnapshotVerificationError naming it."""
    folder = Path(folder)
    manifest = verify_snapshot(folder)
    digest = manifest_sha256(folder)
    files = sorted(str(p) for p in (folder / DATA_DIR).glob("*.parquet"))
    # the Arrow cache is keyed by the verified manifest: a different snapshot never reuses it
    cache = Path(os.environ.get("MASTERS_DATASETS_CACHE", Path.home() / ".cache" / "masters-distill" / "datasets"))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train",
                               cache_dir=str(cache / digest[:16]))
    expected = sum(manifest.row_counts.values())
    if ds.num_rows != expected:
        raise SnapshotError(f"{folder}: {ds.num_rows} rows read, manifest says {expected}")
    return ds, manifest, digest


def to_prompt_completion(ds: datasets.Dataset, folder: str | os.PathLike = "") -> datasets.Dataset:
    """Keep prompt/image/completion and make prompt and completion conversational, the shape
    TRL's vision collator renders with the processor's chat template."""
    missing = [c for c in SFT_COLUMNS if c not in ds.column_names]
    if missing:
        raise SnapshotError(f"snapshot {folder} has no column {missing[0]!r}; SFT needs "
                            f"{', '.join(SFT_COLUMNS)}")
    ds = ds.select_columns(list(SFT_COLUMNS))
    return ds.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}],
                               "completion": [{"role": "assistant", "content": row["completion"]}]},
                  desc="chat format")
