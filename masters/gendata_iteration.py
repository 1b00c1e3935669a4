"""One iteration's Gen-Data, stage by stage into the catalog: register the checkpoints and the
iteration, generate teacher (masked) and student responses, score them teacher-forced, judge
them, reward them. Every stage asks the catalog what is already there and does only the rest, and
commits in batches, so a killed run resumes where it stopped and a finished one is a no-op."""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
from pydantic import Field
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from catalog import Catalog
from gendata.backends import SamplingConfig, backend, generate_responses
from gendata.hf_generate import load_vlm
from gendata.masking import MaskSpec
from gendata.scoring import ScoringConfig, score_responses
from masters import faults
from masters.rescore import judge_missing, rescore
from rewards.judges import Judge
from schemas import ids
from schemas.config import RewardConfig, StrictModel
from schemas.errors import MastersError


class IterationSpec(StrictModel):
    """What one iteration generates and how."""

    run_id: str = Field(description="the run the iteration belongs to")
    iteration: int = Field(ge=0, description="0-based iteration index")
    teacher: str = Field(description="teacher checkpoint folder (unmasked)")
    student: str = Field(description="student checkpoint folder (the one generating and being trained)")
    mask_ratio: float = Field(ge=0, lt=1, description="the teacher's mask ratio r_i")
    teacher_responses: int = Field(4, ge=0, description="responses per question from the masked teacher")
    student_responses: int = Field(4, ge=0, description="responses per question from the student")
    seed: int = Field(0, description="sampling seed (each question derives its own)")
    split: str = Field("train", description="which questions of the catalog to generate for")
    backend: str = Field("transformers", description="generation backend (transformers / vllm)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="sampling parameters")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="teacher-forced scoring")
    questions_per_batch: int = Field(16, gt=0, description="questions per generation commit")
    groups_per_batch: int = Field(8, gt=0, description="question groups per scoring commit")


@dataclass
class IterationResult:
    iteration_id: str
    teacher_model_id: str
    student_model_id: str
    added: dict[str, int] = field(default_factory=dict)  # rows added per stage in this call


def checkpoint_facts(folder: Path) -> tuple[str, int]:
    """(family, parameter count) of a checkpoint, from config.json and the safetensors headers."""
    from safetensors import safe_open

    family = json.loads((folder / "config.json").read_text()).get("model_type", "unknown")
    count = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                count += math.prod(st.get_slice(key).get_shape())
    return family, count


def model_row(folder: Path, role: str, name: str | None = None, parent_model_id: str | None = None) -> dict:
    """A `models` row for a checkpoint folder; lineage comes from its meta.json when it has one
    (the trainer writes it: snapshot name, manifest sha256, catalog version)."""
    tiny = folder / "masters_tiny.json"
    info = json.loads(tiny.read_text()) if tiny.is_file() else {}
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    family, params = checkpoint_facts(folder)
    return {"model_id": ids.checkpoint_id(folder), "name": name or folder.name, "role": role,
            "family": family, "size_label": info["size"] if isinstance(info.get("size"), str) else None,
            "path": str(folder.absolute()), "param_count": params, "parent_model_id": parent_model_id,
            "snapshot_name": meta.get("snapshot"), "snapshot_manifest_sha256": meta.get("snapshot_manifest_sha256"),
            "catalog_version": meta.get("catalog_version"),
            "meta": json.dumps({k: meta[k] for k in ("kind", "metrics") if k in meta}, default=str) if meta else None,
            "created_at": datetime.now(timezone.utc)}


def _questions(catalog: Catalog, split: str) -> tuple[pa.Table, dict[str, bytes]]:
    table = catalog.sql("SELECT q.question_id, q.question, im.bytes FROM questions q "
                        "JOIN images im USING (image_id) WHERE q.split = $s ORDER BY q.question_id",
                        params={"s": split})
    if table.num_rows == 0:
        raise MastersError(f"the catalog has no {split!r} questions with images: add some with "
                           "`masters questions synthetic` or `masters questions hf`")
    images = dict(zip(table.column("question_id").to_pylist(), table.column("bytes").to_pylist()))
    return table.select(["question_id", "question"]), images


def _existing(catalog: Catalog, sql: str, **params) -> set[str]:
    return set(catalog.sql(sql, params=params).column(0).to_pylist())


def produce_iteration(catalog: Catalog, spec: IterationSpec, judge: Judge, reward: RewardConfig, *,
                      mask_spec: MaskSpec | None = None, progress: bool = True) -> IterationResult:
    """Run the iteration's Gen-Data stages; each commits as it goes and skips what exists."""
    teacher_dir, student_dir = Path(spec.teacher), Path(spec.student)
    teacher_id, student_id = ids.checkpoint_id(teacher_dir), ids.checkpoint_id(student_dir)
    it_id = ids.iteration_id(spec.run_id, spec.iteration)
    result = IterationResult(it_id, teacher_id, student_id)
    questions, images = _questions(catalog, spec.split)

    # checkpoints and the iteration row (content ids: a re-run adds nothing)
    if AutoTokenizer.from_pretrained(teacher_dir).get_vocab() != AutoTokenizer.from_pretrained(student_dir).get_vocab():
        raise MastersError(f"teacher {teacher_dir} and student {student_dir} have different vocabularies; "
                           "token-level scoring needs a shared tokenizer")
    config_hash = ids.content_id("iteration-config", spec=spec.model_dump(mode="json",
                                 exclude={"questions_per_batch", "groups_per_batch"}))
    before = catalog.sql("SELECT config_hash FROM iterations WHERE iteration_id = $it",
                         params={"it": it_id}).column(0).to_pylist()
    if before and before[0] != config_hash:
        raise MastersError(f"iteration {spec.iteration} of run {spec.run_id!r} is already in the catalog, made "
                           "with another configuration (teacher, student, mask ratio, sampling, seeds...); "
                           "resuming it would mix the two: use a new run_id")
    with catalog.commit(f"iteration {spec.iteration} of {spec.run_id}", stage="iteration",
                        iteration=spec.iteration) as tx:
        tx.append("models", [model_row(teacher_dir, "teacher"), model_row(student_dir, "student")])
        tx.append("iterations", [{"iteration_id": it_id, "run_id": spec.run_id, "iteration": spec.iteration,
                                  "mask_ratio": spec.mask_ratio, "teacher_model_id": teacher_id,
                                  "student_model_id": student_id, "config_hash": config_hash,
                                  "created_at": datetime.now(timezone.utc)}])
    # generation: masked teacher, then the student
    generated = 0
    for source, folder, model_id, ratio, n in [
            ("teacher", teacher_dir, teacher_id, spec.mask_ratio, spec.teacher_responses),
            ("student", student_dir, student_id, 0.0, spec.student_responses)]:
        if n == 0:
            continue
        have = _existing(catalog, "SELECT response_id FROM responses WHERE iteration_id = $it AND source = $s",
                         it=it_id, s=source)
        expected = questions.num_rows * n
        if len(have) >= expected:
            continue
        engine = backend(spec.backend, str(folder), mask_ratio=ratio, mask_spec=mask_spec)
        bar = tqdm(total=questions.num_rows, desc=f"generate {source}", disable=not progress)
        for table in generate_responses(engine, questions, images, iteration_id=it_id, source=source,
                                        model_id=model_id, mask_ratio=ratio, n=n, seed=spec.seed,
                                        sampling=spec.sampling, existing=have,
                                        questions_per_batch=spec.questions_per_batch):
            res = catalog.append("responses", table, f"generate {source} it{spec.iteration}",
                                 stage="generate", iteration=spec.iteration, source=source)
            generated += res.added.get("responses", 0)
            bar.update(table.num_rows // n)
            faults.point("generate")
        bar.close()
        if hasattr(engine, "close"):
            engine.close()
        del engine
        gc.collect()
    result.added["responses"] = generated

    # teacher-forced scoring of every response of the iteration by (masked teacher, student)
    responses = catalog.sql("SELECT response_id, question_id, prompt, token_ids FROM responses "
                            "WHERE iteration_id = $it ORDER BY question_id, source, sample_index",
                            params={"it": it_id})
    have = _existing(catalog, "SELECT ts.stats_id FROM token_stats ts JOIN responses r USING (response_id) "
                     "WHERE r.iteration_id = $it", it=it_id)
    scored = 0
    if len(have) < responses.num_rows:
        teacher, processor = load_vlm(teacher_dir)
        student, _ = load_vlm(student_dir)
        bar = tqdm(total=responses.num_rows, desc="score", disable=not progress)
        for table in score_responses(teacher, student, processor, responses, images,
                                     teacher_model_id=teacher_id, teacher_mask_ratio=spec.mask_ratio,
                                     student_model_id=student_id, config=spec.scoring, skip=have,
                                     groups_per_batch=spec.groups_per_batch, mask_spec=mask_spec):
            res = catalog.append("token_stats", table, f"score it{spec.iteration}", stage="score",
                                 iteration=spec.iteration)
            scored += res.added.get("token_stats", 0)
            bar.update(table.num_rows)
            faults.point("score")
        bar.close()
        del teacher, student
        gc.collect()
    result.added["token_stats"] = scored

    judged = judge_missing(catalog, judge, iteration=spec.iteration, run_id=spec.run_id, progress=progress)
    result.added["verdicts"] = judged.judged
    faults.point("judged")
    rewarded = rescore(catalog, reward, iteration=spec.iteration, run_id=spec.run_id)
    result.added["rewards"] = rewarded.added
    return result
