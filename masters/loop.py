"""The Masters loop. Per iteration: generate (masked teacher + current student) -> score -> judge
-> reward (masters.gendata_iteration, committing as it goes) -> snapshot -> train -> register the
new student (lineage: student <- snapshot <- catalog version) -> evaluate.

Resumable at any point: every stage asks the catalog (or, for training, the finished checkpoint
folder with its meta.json) what is done and does the rest. A student is trained into a scratch
folder and renamed into place when complete, so a kill mid-training leaves no half checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from catalog import Catalog
from catalog.snapshots import create_snapshot
from gendata.questions import QuestionSet
from gendata.synthetic_vqa import synthetic_vqa
from masters import faults
from masters.evaluate import evaluate
from masters.gendata_iteration import IterationSpec, model_row, produce_iteration
from masters.questions import ingest_questions
from masters.run_config import JudgeConfig, RunConfig
from rewards.judges import Judge, make_judge
from schemas import ids
from schemas.config import RewardConfig
from schemas.errors import ConfigError, MastersError
from schemas.tables import EVALUATIONS
from trainer.checkpoints import META_NAME
from trainer.config import GRPORunConfig
from trainer.grpo import train_grpo

LADDER_PREFIX = "ladder:"


def resolve_model(ref: str, progress: bool = True) -> Path:
    """A checkpoint folder from a config reference (a folder, or ladder:<member>)."""
    if ref.startswith(LADDER_PREFIX):
        from masters.fixtures import LADDER_ORDER, ensure_ladder

        member = ref[len(LADDER_PREFIX):]
        if member not in LADDER_ORDER:
            raise ConfigError(f"{ref}: the tiny ladder has {', '.join(LADDER_ORDER)}")
        return ensure_ladder(progress=progress) / "models" / member
    path = Path(ref).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{ref}: not a checkpoint folder (no config.json)")
    return path


def build_judge(cfg: JudgeConfig) -> Judge:
    try:
        if cfg.kind == "llm":
            from rewards.llm_judge import LLMJudgeConfig

            return make_judge("llm", config=LLMJudgeConfig.parse(cfg.params, where="judge.params"))
        return make_judge(cfg.kind, **cfg.params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"judge: cannot build {cfg.kind!r} ({exc})") from None


def reward_config(config: RunConfig, judge: Judge) -> RewardConfig:
    return RewardConfig(judge_id=judge.judge_id, **config.reward.model_dump())


def run_dir(config: RunConfig, catalog: Catalog) -> Path:
    if config.output_dir:
        return Path(config.output_dir)
    return Path(catalog.config.snapshot_root).expanduser().parent / "runs" / config.run_id


def student_path(out: Path, iteration: int) -> Path:
    """Where the student trained in iteration ``iteration - 1`` lives."""
    return out / "students" / f"iter{iteration}"


def ensure_questions(catalog: Catalog, config: RunConfig) -> None:
    q = config.questions
    if q.source == "synthetic":
        for split, n in (("train", q.train), ("test", q.test)):
            ingest_questions(catalog, synthetic_vqa(n, split, q.seed, q.image_size),
                             f"synthetic {split} questions", source="synthetic", split=split)
    for split in ("train", config.eval.split):
        if catalog.sql("SELECT count(*) FROM questions WHERE split = $s", params={"s": split}).column(0)[0].as_py() == 0:
            raise MastersError(f"the catalog has no {split!r} questions: add some (`masters questions ...`) "
                               "or use questions.source: synthetic")


def question_set(catalog: Catalog, split: str, limit: int | None = None) -> QuestionSet:
    qs = catalog.sql("SELECT * FROM questions WHERE split = $s ORDER BY question_id"
                     + (f" LIMIT {int(limit)}" if limit else ""), params={"s": split})
    images = catalog.sql("SELECT * FROM images WHERE image_id IN (SELECT image_id FROM questions "
                         "WHERE split = $s)", params={"s": split})
    return QuestionSet(qs, images)


def evaluate_checkpoint(catalog: Catalog, folder: Path, config: RunConfig, judge: Judge, *,
                        iteration: int | None, progress: bool) -> dict:
    """Accuracy of a checkpoint on the eval split. Measured once per (checkpoint, questions,
    judge, decoding): a later run reuses the measurement and records it under its own run id."""
    qs = question_set(catalog, config.eval.split, config.eval.limit)
    model_id = ids.checkpoint_id(folder)
    key = "\n".join(sorted(qs.questions.column("question_id").to_pylist())) + f"|{config.eval.max_new_tokens}"
    qhash = hashlib.sha256(key.encode()).hexdigest()[:32]
    eid = ids.content_id("evaluation", model_id=model_id, split=config.eval.split, judge_id=judge.judge_id,
                         questions=qhash, run_id=config.run_id, iteration=iteration)
    found = catalog.sql("SELECT evaluation_id, accuracy, per_type, n FROM evaluations WHERE model_id = $m "
                        "AND split = $s AND judge_id = $j AND questions_hash = $q ORDER BY created_at",
                        params={"m": model_id, "s": config.eval.split, "j": judge.judge_id, "q": qhash}).to_pylist()
    if found:
        res = {"accuracy": found[0]["accuracy"], "per_type": json.loads(found[0]["per_type"]), "n": found[0]["n"]}
    else:
        r = evaluate(folder, qs, max_new_tokens=config.eval.max_new_tokens, progress=progress, judge=judge)
        res = {"accuracy": r.accuracy, "per_type": r.per_type, "n": r.n}
    if eid not in {f["evaluation_id"] for f in found}:
        catalog.append(EVALUATIONS.name, [{
            "evaluation_id": eid, "model_id": model_id, "split": config.eval.split, "judge_id": judge.judge_id,
            "questions_hash": qhash, "n": res["n"], "accuracy": res["accuracy"],
            "per_type": json.dumps(res["per_type"]), "run_id": config.run_id, "iteration": iteration,
            "created_at": datetime.now(timezone.utc)}], f"evaluate {folder.name}", stage="evaluate",
            iteration=iteration)
    return res


@dataclass
class IterationSummary:
    iteration: int
    mask_ratio: float
    teacher: str
    student_in: str
    student_out: str
    snapshot: str
    catalog_version: int
    rows: int
    added: dict[str, int] = field(default_factory=dict)
    reward_mean: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None
    accuracy: float | None = None
    per_type: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        rm = " ".join(f"{k} {v:.2f}" for k, v in sorted(self.reward_mean.items()))
        loss = "-" if self.train_loss is None else f"{self.train_loss:.3f}"
        acc = "-" if self.accuracy is None else f"{self.accuracy:.3f}"
        new = sum(self.added.values())
        return (f"iter {self.iteration}: teacher {self.teacher} r={self.mask_ratio:.2f} | +{new} rows | "
                f"snapshot {self.snapshot} (v{self.catalog_version}, {self.rows} rows) | reward {rm} | "
                f"train loss {loss} | accuracy {acc} | {self.seconds:.0f}s")


@dataclass
class RunResult:
    run_id: str
    start_accuracy: dict
    iterations: list[IterationSummary]
    final_student: Path
    seconds: float

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, "start_accuracy": self.start_accuracy,
                           "iterations": [asdict(s) for s in self.iterations],
                           "final_student": str(self.final_student), "seconds": self.seconds}, indent=2)


def _trainer_config(student: Path, snapshot: Path, out: Path, config: RunConfig, iteration: int,
                    progress: bool) -> GRPORunConfig:
    t = config.train.model_dump(exclude={"launcher", "accelerate_config", "num_processes"})
    return GRPORunConfig(model=str(student), snapshot=str(snapshot), output_dir=str(out),
                         seed=config.seed + iteration, progress=progress, print_logs=False, logging_steps=5, **t)


def _same_training(meta: dict, cfg: GRPORunConfig) -> bool:
    keep = lambda d: {k: v for k, v in d.items() if k not in ("output_dir", "progress", "print_logs")}  # noqa: E731
    return keep(meta.get("trainer_config", {})) == keep(cfg.model_dump())


def _launch(cfg: GRPORunConfig, config: RunConfig, scratch: Path) -> dict:
    """Train in ``accelerate launch`` worker processes (DeepSpeed ZeRO-3 across GPUs)."""
    scratch.mkdir(parents=True, exist_ok=True)
    cfg_file = scratch.parent / f"{scratch.name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config.train.accelerate_config:
        cmd += ["--config_file", config.train.accelerate_config]
    if config.train.num_processes:
        cmd += ["--num_processes", str(config.train.num_processes)]
    cmd += ["-m", "trainer", "grpo", str(cfg_file)]
    proc = subprocess.run(cmd)
    cfg_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise MastersError(f"training failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads((scratch / META_NAME).read_text())["metrics"]


def _train(student: Path, snapshot: Path, final: Path, config: RunConfig, iteration: int, progress: bool) -> dict:
    scratch = final.with_name(f".{final.name}.partial")
    cfg = _trainer_config(student, snapshot, scratch, config, iteration, progress)
    for done in (final, scratch):  # trained before a restart (killed before the rename, for scratch)
        if (done / META_NAME).is_file():
            meta = json.loads((done / META_NAME).read_text())
            if not _same_training(meta, cfg):
                raise MastersError(f"{done} was trained with other settings than this config's; resuming "
                                   "would mix the two: use a new run_id (or remove that folder)")
            if done == scratch:
                shutil.rmtree(scratch / "trainer_state", ignore_errors=True)
                os.rename(scratch, final)
            return meta["metrics"]
    shutil.rmtree(scratch, ignore_errors=True)  # killed mid-training: start that training over
    faults.point("train")
    metrics = _launch(cfg, config, scratch) if config.train.launcher == "accelerate" else train_grpo(cfg)
    faults.point("train-saved")  # meta.json is written last: from here a restart only renames
    shutil.rmtree(scratch / "trainer_state", ignore_errors=True)
    os.rename(scratch, final)  # the checkpoint appears whole or not at all
    return metrics


def write_json(path: Path, doc: str) -> None:
    """Write a file whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


def run(config: RunConfig, catalog: Catalog, *, progress: bool = True,
        report: Callable[[IterationSummary], None] | None = None) -> RunResult:
    """Run (or resume) every iteration of ``config`` against ``catalog``."""
    started = time.perf_counter()
    judge = build_judge(config.judge)
    reward = reward_config(config, judge)
    out = run_dir(config, catalog)
    student = resolve_model(config.student, progress)
    teachers = {t.model: resolve_model(t.model, progress) for t in config.teachers}
    ensure_questions(catalog, config)
    start_acc = evaluate_checkpoint(catalog, student, config, judge, iteration=-1, progress=progress)
    for folder in dict.fromkeys(teachers.values()):  # the teachers' own accuracy, for comparison
        evaluate_checkpoint(catalog, folder, config, judge, iteration=None, progress=progress)
    summaries = []
    for i in range(config.iterations):
        t0 = time.perf_counter()
        ratio = config.schedule.ratio(i)
        teacher_ref = config.teacher_for(i)
        spec = IterationSpec(run_id=config.run_id, iteration=i, teacher=str(teachers[teacher_ref]),
                             student=str(student), mask_ratio=ratio, teacher_responses=config.teacher_responses,
                             student_responses=config.student_responses, seed=config.seed + 1000 * i,
                             backend=config.backend, sampling=config.sampling, scoring=config.scoring)
        produced = produce_iteration(catalog, spec, judge, reward, progress=progress)
        faults.point("produced")
        snap = create_snapshot(catalog, f"{config.run_id}-iter{i}", reward.id, iteration=i, run_id=config.run_id,
                               progress=progress)
        faults.point("snapshot")
        means = catalog.sql(
            "SELECT r.source, avg(w.reward) AS m FROM rewards w JOIN responses r USING (response_id) "
            "WHERE r.iteration_id = $it AND w.reward_config_id = $rc GROUP BY r.source",
            params={"it": produced.iteration_id, "rc": reward.id}).to_pylist()
        new_student = student_path(out, i + 1)
        new_student.parent.mkdir(parents=True, exist_ok=True)
        metrics = _train(student, snap.path, new_student, config, i, progress)
        row = model_row(new_student, "student", f"{config.run_id}/student@iter{i + 1}",
                        parent_model_id=ids.checkpoint_id(student))
        catalog.append("models", [row], f"register student iter{i + 1}", stage="register", iteration=i)
        faults.point("registered")
        acc = evaluate_checkpoint(catalog, new_student, config, judge, iteration=i, progress=progress)
        summary = IterationSummary(
            iteration=i, mask_ratio=ratio, teacher=teacher_ref, student_in=str(student),
            student_out=str(new_student), snapshot=snap.name, catalog_version=snap.catalog_version,
            rows=snap.num_rows, added=produced.added, reward_mean={m["source"]: m["m"] for m in means},
            train_loss=metrics.get("train_loss"), accuracy=acc["accuracy"], per_type=acc["per_type"],
            seconds=time.perf_counter() - t0)
        summaries.append(summary)
        if report:
            report(summary)
        student = new_student
    result = RunResult(config.run_id, start_acc, summaries, student, time.perf_counter() - started)
    write_json(out / "run.json", result.to_json())
    return result
