"""Loading a published Gen-Data dataset (a Hub export folder, local or downloaded) into a catalog,
in one commit, so it can be re-judged and re-scored there. Ids are content hashes, so importing
the same dataset twice adds nothing; rows of a catalog the data came from are recognised too."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.conform import conform
from catalog.hub_export import read_meta
from catalog.store import Catalog, CommitResult
from schemas.errors import SnapshotError
from schemas.snapshot import DATA_DIR
from schemas.tables import table_spec

ORDER = ("models", "iterations", "responses", "token_stats", "verdicts", "reward_configs", "rewards")


def _read(folder: Path, config: str) -> pa.Table | None:
    files = sorted((folder / DATA_DIR / config).glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files])


def _split_questions(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    images = {}
    for qid, img, fmt, w, h, image_id in zip(*(table.column(c).to_pylist() for c in (
            "question_id", "image", "image_format", "image_width", "image_height", "image_id"))):
        if image_id is None:
            continue
        if img is None or img.get("bytes") is None:
            raise SnapshotError(f"question {qid}: image {image_id} has no bytes in the dataset")
        images[image_id] = {"image_id": image_id, "bytes": img["bytes"], "format": fmt, "width": w, "height": h}
    questions = conform(table_spec("questions"), table.drop_columns(["image", "image_format", "image_width",
                                                                     "image_height"]))
    return pa.Table.from_pylist(list(images.values()), schema=table_spec("images").schema), questions


def _with_iteration(config: str, table: pa.Table, responses: pa.Table | None) -> pa.Table:
    """Datasets published before the per-response tables were partitioned by iteration lack their
    ``iteration_id``: it is the response's, looked up in the dataset's responses."""
    if table_spec(config).partition != "iteration_id" or "iteration_id" in table.column_names or responses is None:
        return table
    import pyarrow.compute as pc

    index = pc.index_in(table.column("response_id"), value_set=responses.column("response_id"))
    return table.append_column("iteration_id", pc.take(responses.column("iteration_id"), index))


def import_gendata(catalog: Catalog, folder: str | os.PathLike, source: str | None = None) -> CommitResult:
    """Append every table of the dataset in ``folder`` to the catalog (one commit)."""
    folder = Path(folder)
    meta = read_meta(folder, verify=True)
    tables: dict[str, pa.Table] = {}
    questions = _read(folder, "questions")
    if questions is None or _read(folder, "responses") is None:
        raise SnapshotError(f"{folder}: a Gen-Data dataset needs at least the questions and responses configs")
    tables["images"], tables["questions"] = _split_questions(questions)
    for config in ORDER:
        table = _read(folder, config)
        if table is not None:
            tables[config] = conform(table_spec(config), _with_iteration(config, table, tables.get("responses")))
    expected = meta.get("row_counts", {})
    for config, table in [("questions", questions), *tables.items()]:
        if config in expected and expected[config] != table.num_rows:
            raise SnapshotError(f"{folder}: {config} has {table.num_rows} rows, masters.yaml says "
                                f"{expected[config]} (an incomplete download?)")
    with catalog.commit(f"import {source or folder}", stage="import", snapshot=meta["snapshot"],
                        snapshot_manifest_sha256=meta["snapshot_manifest_sha256"]) as tx:
        for name in ("images", "questions", *ORDER):
            if name in tables:
                tx.append(name, tables[name])
    return tx.result
