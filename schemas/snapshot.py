"""The snapshot contract: the row layout the trainer reads, and the manifest that makes a
snapshot folder verifiable. The trainer imports this module and nothing else of the catalog.

A snapshot folder holds::

    README.md                          dataset card (YAML `configs` + `dataset_info`)
    data/train-<uid>-NNNNN-of-MMMMM.parquet  rows in SNAPSHOT_ROW_SCHEMA (<uid>: 12 hex digits per snapshot)
    manifest.json                      written last: catalog version, configs, row counts, sha256s

A folder without manifest.json is incomplete (its writer died) and is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.errors import SnapshotVerificationError
from schemas.tables import col

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "masters-snapshot/1"
DATA_DIR = "data"
SPLIT = "train"

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

SNAPSHOT_ROW_SCHEMA = pa.schema([
    col("response_id", pa.string(), "the response this row trains on"),
    col("group_id", pa.string(), "GRPO group (iteration x question)"),
    col("question_id", pa.string(), "the question"),
    col("iteration", pa.int32(), "iteration the response was generated in"),
    col("source", pa.string(), "teacher / student"),
    col("model_id", pa.string(), "checkpoint that generated the response"),
    col("mask_ratio", pa.float64(), "mask ratio of that checkpoint"),
    col("sample_index", pa.int32(), "sample index within its source"),
    col("qtype", pa.string(), "question type"),
    col("prompt", pa.string(), "the user prompt text (question and options)"),
    col("image", IMAGE_TYPE, "the image, as a Hugging Face `Image` feature", nullable=True),
    col("answer", pa.string(), "ground-truth answer"),
    col("completion", pa.string(), "the response text"),
    col("completion_ids", pa.list_(pa.int32()), "the response token ids"),
    col("r_acc", pa.float64(), "accuracy reward"),
    col("divergence", pa.float64(), "aggregated divergence D"),
    col("r_distill", pa.float64(), "normalised distillation reward"),
    col("reward", pa.float64(), "combined reward R"),
    col("advantage", pa.float64(), "GRPO group advantage"),
    col("top_k", pa.int32(), "k of the teacher top-k columns", nullable=True),
    col("student_logprobs", pa.list_(pa.float32()), "stored student log-probs (GRPO old/reference)", nullable=True),
    col("teacher_logprobs", pa.list_(pa.float32()), "masked teacher log-prob of each token", nullable=True),
    col("teacher_topk_ids", pa.list_(pa.int32()), "teacher top-k ids, flattened tokens x k", nullable=True),
    col("teacher_topk_logprobs", pa.list_(pa.float32()), "teacher top-k log-probs, flattened tokens x k", nullable=True),
])

SFT_ROW_SCHEMA = pa.schema([
    col("question_id", pa.string(), "the question"),
    col("qtype", pa.string(), "question type"),
    col("prompt", pa.string(), "the user prompt text (question and options)"),
    col("image", IMAGE_TYPE, "the image, as a Hugging Face `Image` feature", nullable=True),
    col("completion", pa.string(), "the target response (ground truth, or a teacher's response)"),
    col("answer", pa.string(), "ground-truth answer"),
])
"""Rows of an SFT folder (teacher warm-up, naive distillation). The trainer's SFT reads only
prompt, image and completion, so a GRPO snapshot (SNAPSHOT_ROW_SCHEMA) is valid SFT input too."""

SFT_COLUMNS = ("prompt", "image", "completion")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Manifest:
    """What manifest.json holds."""

    name: str
    catalog_version: int
    reward_config_id: str
    row_counts: dict[str, int]
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256": ..., "bytes": ...}
    configs: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    format: str = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST_NAME
        try:
            doc = json.loads(path.read_text())
            return cls(**doc)
        except FileNotFoundError:
            raise SnapshotVerificationError(str(folder), [
                f"{MANIFEST_NAME}: missing - the snapshot is incomplete (its writer did not finish)"
            ]) from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise SnapshotVerificationError(str(folder), [
                f"{MANIFEST_NAME}: unreadable ({exc})"
            ]) from None


def manifest_sha256(folder: Path) -> str:
    return sha256_file(Path(folder) / MANIFEST_NAME)


def snapshot_problems(folder: Path) -> list[str]:
    """Every way the folder differs from its manifest: missing, changed and unlisted files."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    try:
        manifest = Manifest.read(folder)
    except SnapshotVerificationError as exc:
        return exc.problems
    problems: list[str] = []
    if not isinstance(manifest.files, dict):
        return [f"{MANIFEST_NAME}: 'files' is not a mapping"]
    if manifest.format != MANIFEST_FORMAT:
        problems.append(f"{MANIFEST_NAME}: format {manifest.format!r}, expected {MANIFEST_FORMAT!r}")
    for rel, meta in sorted(manifest.files.items()):
        path = folder / rel
        if not isinstance(meta, dict) or not {"sha256", "bytes"} <= set(meta):
            problems.append(f"{rel}: manifest entry lacks sha256/bytes")
            continue
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"{rel}: manifest names a file outside the snapshot folder")
            continue
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != meta["bytes"]:
            problems.append(f"{rel}: changed ({size} bytes, manifest says {meta['bytes']})")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{rel}: changed (sha256 differs from the manifest)")
    listed = set(manifest.files) | {MANIFEST_NAME}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel not in listed:
                problems.append(f"{rel}: not in the manifest")
    return problems


def verify_snapshot(folder: str | os.PathLike, expected_manifest_sha256: str | None = None) -> Manifest:
    """Check every file against manifest.json; raise SnapshotVerificationError naming each
    missing, changed or unlisted file. With ``expected_manifest_sha256`` (the catalog's record,
    or a trainer's lineage), an edited manifest is caught too. Returns the manifest when intact."""
    folder = Path(folder)
    problems = snapshot_problems(folder)
    if (not problems and expected_manifest_sha256
            and manifest_sha256(folder) != expected_manifest_sha256):
        problems.append(f"{MANIFEST_NAME}: changed (sha256 differs from the recorded "
                        f"{expected_manifest_sha256})")
    if problems:
        raise SnapshotVerificationError(str(folder), problems)
    return Manifest.read(folder)
