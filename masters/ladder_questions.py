"""The questions a tiny ladder learns from: the built-in synthetic visual QA (default), any HF
dataset by the column mapping of `masters questions hf`, or a question set already in a catalog.
Train / validation / test splits (validation carved from train, so tuning never sees test), a
content id for the ladder's cache key, and the task's chance level per question type."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from gendata.hf_source import ColumnMapping
from gendata.questions import QuestionSet
from rewards.matching import match_answer
from schemas.config import CatalogConfig, StrictModel
from schemas.errors import ConfigError

SPLITS = ("train", "validation", "test")


class LadderQuestions(StrictModel):
    """Where a ladder's questions come from."""

    source: Literal["synthetic", "hf", "catalog"] = Field(
        "synthetic", description="synthetic: the built-in visual QA; hf: a Hugging Face dataset (path) by column "
        "mapping; catalog: the questions of a catalog")
    path: str | None = Field(None, description="hf: dataset folder, Parquet or Hub id; catalog: an embedded "
                             "catalog's folder (default: the --catalog one)")
    mapping: ColumnMapping = Field(default_factory=ColumnMapping, description="hf: which column holds what")
    name: str | None = Field(None, description="hf: source name stored with each question; catalog: only the "
                             "questions of this source (the questions.source column)")
    train_split: str = Field("train", description="split the members warm up on (validation carved from it)")
    test_split: str = Field("test", description="held-out split of the report")


@dataclass
class LadderData:
    train: QuestionSet
    validation: QuestionSet
    test: QuestionSet

    def splits(self) -> dict[str, QuestionSet]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def content_id(self) -> str:
        """Hash of every split's question ids (content hashes of image, question, answer, choices)."""
        h = hashlib.sha256()
        for split, qs in self.splits().items():
            h.update(split.encode() + b"\0")
            for qid in sorted(qs.questions.column("question_id").to_pylist()):
                h.update(qid.encode())
        return h.hexdigest()[:16]

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for split, qs in self.splits().items():
            pq.write_table(qs.questions, folder / f"{split}-questions.parquet")
            pq.write_table(qs.images, folder / f"{split}-images.parquet")

    @classmethod
    def read(cls, folder: Path) -> "LadderData":
        return cls(*(QuestionSet(pq.read_table(folder / f"{s}-questions.parquet"),
                                 pq.read_table(folder / f"{s}-images.parquet")) for s in SPLITS))


def subset(qs: QuestionSet, questions: pa.Table) -> QuestionSet:
    """``questions`` (rows of ``qs``) with only the images they use."""
    used = pa.array(sorted({i for i in questions.column("image_id").to_pylist() if i}), pa.string())
    return QuestionSet(questions, qs.images.filter(pc.is_in(qs.images.column("image_id"), used)))


def carve_validation(qs: QuestionSet, n: int, where: str) -> tuple[QuestionSet, QuestionSet]:
    """(train, validation): the validation rows are the ``n`` with the largest question ids (content
    hashes: a fixed pseudo-random choice that does not depend on the source's row order)."""
    rows = qs.questions.num_rows
    if n >= rows:
        raise ConfigError(f"{where}: {rows} train questions cannot give {n} validation questions and keep any "
                          "to train on; lower validation_questions")
    order = pc.sort_indices(qs.questions, [("question_id", "ascending")])
    keep, val = qs.questions.take(order[:rows - n]), qs.questions.take(order[rows - n:])
    return subset(qs, keep), subset(qs, val)


def _relabel(qs: QuestionSet, split: str) -> QuestionSet:
    col = qs.questions.schema.get_field_index("split")
    return QuestionSet(qs.questions.set_column(col, "split", pa.array([split] * qs.questions.num_rows, pa.string())),
                       qs.images)


def _limited(qs: QuestionSet, n: int | None) -> QuestionSet:
    if n is None or qs.questions.num_rows <= n:
        return qs
    order = pc.sort_indices(qs.questions, [("question_id", "ascending")])
    return subset(qs, qs.questions.take(order[:n]))


def load_ladder_data(spec: LadderQuestions, *, train: int, validation: int, test: int, seed: int,
                     image_size: int, catalog: CatalogConfig | None = None) -> LadderData:
    """The three splits. Synthetic: ``train`` / ``validation`` / ``test`` questions generated;
    otherwise at most ``train`` + ``validation`` train rows and ``test`` test rows of the source."""
    if spec.source == "synthetic":
        from gendata.synthetic_vqa import synthetic_vqa

        return LadderData(*(synthetic_vqa(n, s, seed, image_size)
                            for s, n in (("train", train), ("validation", validation), ("test", test))))
    if spec.source == "hf":
        if not spec.path:
            raise ConfigError("ladder questions: source hf needs path (a dataset folder, Parquet file or Hub id)")
        from gendata.hf_source import hf_questions

        where = spec.path
        tr = hf_questions(spec.path, spec.mapping, split=spec.train_split, source_name=spec.name)
        te = hf_questions(spec.path, spec.mapping, split=spec.test_split, source_name=spec.name)
    else:
        tr, te, where = _catalog_splits(spec, catalog)
    tr = _limited(tr, train + validation)
    tr, val = carve_validation(tr, min(validation, tr.questions.num_rows // 5), where)
    return LadderData(_relabel(tr, "train"), _relabel(val, "validation"), _relabel(_limited(te, test), "test"))


def _catalog_splits(spec: LadderQuestions, catalog: CatalogConfig | None) -> tuple[QuestionSet, QuestionSet, str]:
    from catalog import Catalog
    from catalog.engine import redact

    config = CatalogConfig.for_directory(spec.path) if spec.path else catalog
    if config is None:
        raise ConfigError("ladder questions: source catalog needs path (an embedded catalog's folder) or --catalog")
    uri = redact(config.uri)
    out = []
    with Catalog.open_read_only(config) as cat:
        for split in (spec.train_split, spec.test_split):
            where, params = "split = $s", {"s": split}
            if spec.name:
                where, params = where + " AND source = $src", {**params, "src": spec.name}
            qs = cat.sql(f"SELECT * FROM questions WHERE {where} ORDER BY question_id", params=params)
            if qs.num_rows == 0:
                raise ConfigError(f"{uri}: no {split!r} questions" + (f" of source {spec.name!r}" if spec.name else "")
                                  + "; land some with `masters questions ...`")
            images = cat.sql("SELECT * FROM images WHERE image_id IN (SELECT unnest($ids))",
                             params={"ids": sorted({i for i in qs.column("image_id").to_pylist() if i})})
            out.append(QuestionSet(qs, images))
    return out[0], out[1], uri


def chance_levels(train: QuestionSet, test: QuestionSet) -> dict:
    """The task's chance level per question type on ``test``: the better of answering every
    question of a type with that type's most frequent train answer, and (multiple choice) picking
    an option at random. With its 95% noise band (binomial, on the test rows of that type)."""
    by_type: dict[str, Counter] = {}
    for q in train.questions.to_pylist():
        by_type.setdefault(q["qtype"], Counter())[q["answer"]] += 1
    hits: dict[str, list[float]] = {}
    for q in test.questions.to_pylist():
        common = by_type.get(q["qtype"])
        guess = common.most_common(1)[0][0] if common else ""
        majority = float(match_answer(guess, q["answer"], q["answer_type"], q["choices"]))
        uniform = 1.0 / len(q["choices"]) if q["choices"] else 0.0
        hits.setdefault(q["qtype"], [[], []])
        hits[q["qtype"]][0].append(majority)
        hits[q["qtype"]][1].append(uniform)
    per_type = {}
    for qtype, (majority, uniform) in sorted(hits.items()):
        n = len(majority)
        c = max(sum(majority) / n, sum(uniform) / n)
        per_type[qtype] = {"chance": c, "n": n, "noise": noise_band(c, n)}
    n = sum(v["n"] for v in per_type.values())
    overall = sum(v["chance"] * v["n"] for v in per_type.values()) / max(1, n)
    return {"per_type": per_type, "overall": overall, "n": n, "noise": noise_band(overall, n)}


def noise_band(p: float, n: int) -> float:
    """Half-width of the 95% band of an accuracy measured on ``n`` questions around ``p``
    (normal approximation, at least one question's worth)."""
    return max(1.96 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1)), 1.0 / max(n, 1))


def at_chance(accuracy: float, per_type: dict[str, float], chance: dict) -> dict:
    """Which of a member's accuracies are within noise of chance (overall and per type)."""
    types = [t for t, acc in sorted(per_type.items())
             if t in chance["per_type"] and acc <= chance["per_type"][t]["chance"] + chance["per_type"][t]["noise"]]
    return {"overall": accuracy <= chance["overall"] + chance["noise"], "types": types}
