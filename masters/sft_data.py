"""SFT folders made from question sets (ground-truth completions), in snapshot format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from gendata.questions import QuestionSet
from schemas.snapshot import SFT_ROW_SCHEMA
from schemas.snapshot_folder import SnapshotFolderWriter


def sft_rows(qs: QuestionSet) -> pa.Table:
    """One row per question; the completion is its ``answer``: the first of its accepted answers
    (a ChartQA label ``['26']`` gives "26", never the list's text)."""
    images = {r["image_id"]: r["bytes"] for r in qs.images.to_pylist()}
    rows = [{"question_id": q["question_id"], "qtype": q["qtype"], "prompt": q["question"],
             "image": {"bytes": images[q["image_id"]], "path": None} if q["image_id"] else None,
             "completion": q["answer"], "answer": q["answer"]}
            for q in qs.questions.to_pylist()]
    return pa.Table.from_pylist(rows, schema=SFT_ROW_SCHEMA)


def write_sft_folder(qs: QuestionSet, folder: str | Path, name: str) -> Path:
    """Write the question set as an immutable SFT folder (completion = ground-truth answer)."""
    table = sft_rows(qs)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with SnapshotFolderWriter(folder) as w:
        w.write_rows([table], SFT_ROW_SCHEMA, table.num_rows)
        w.write_text("README.md", w.front_matter(SFT_ROW_SCHEMA, tags=["masters-distill", "sft"])
                     + f"\n# SFT data `{name}`\n\n{table.num_rows} questions with ground-truth "
                       "completions (teacher warm-up).\n")
        w.finish(name=name, catalog_version=-1, reward_config_id="",
                 configs={"kind": "sft", "source": "ground-truth"})
    return folder
