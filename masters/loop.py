"""The Masters loop over a ``RunPlan``. Per iteration: the Gen-Data stages (register, generate
with the masked teacher and the current student, score, judge, reward: ``masters.production``,
inline or as shards on Ray, committing as they go) -> snapshot -> train -> register the new
student (lineage: student <- snapshot <- catalog version) -> the ``evaluate`` stage.

Resumable at any point: every stage asks the catalog (or, for training, the finished checkpoint
folder with its meta.json) what is done and does the rest. A student is trained into a scratch
folder and renamed into place when complete, so a kill mid-training leaves no half checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from catalog import Catalog
from catalog.snapshots import create_snapshot
from gendata.synthetic_vqa import synthetic_vqa
from masters import faults
from masters.plan import RunPlan
from masters.production import Launcher, make_launcher, produce_iteration
from masters.questions import ingest_questions
from masters.run_config import RunConfig
from masters.stages import EVALUATE, ITERATION_STAGES, queries, stage_scope
from masters.stages.base import left_out
from masters.stages.evaluation import result_of
from masters.stages.registration import model_row
from schemas import ids
from schemas.errors import MastersError
from trainer.checkpoints import META_NAME
from trainer.config import GRPORunConfig, config_file
from trainer.data import quiet_env
from trainer.grpo import train_grpo


def ensure_questions(catalog: Catalog, config: RunConfig) -> None:
    q = config.questions
    if q.source == "synthetic":
        for split, n in (("train", q.train), ("test", q.test), ("validation", q.validation)):
            if n == 0:
                continue
            ingest_questions(catalog, synthetic_vqa(n, split, q.seed, q.image_size),
                             f"synthetic {split} questions", source="synthetic", split=split)
    for split in ("train", config.eval.split):
        if queries.question_count(catalog, split) == 0:
            raise MastersError(f"the catalog has no {split!r} questions: add some (`masters questions ...`) "
                               "or use questions.source: synthetic")


def evaluate_checkpoints(catalog: Catalog, plan: RunPlan, launcher: Launcher, folders, *,
                         iteration: int | None) -> list[dict]:
    """Accuracy of checkpoints on the eval split (the ``evaluate`` stage: measured once per
    checkpoint, questions, judge and decoding; a later run records the measurement under its own
    run id), read back from the catalog."""
    scope = plan.eval_scope(catalog, folders, iteration)
    launcher.run(EVALUATE, catalog, scope)
    return [result_of(catalog, scope, f) for f in folders]


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
    # what the Gen-Data stages left out by design (empty responses, groups skipped), counted
    left_out: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rm = " ".join(f"{k} {v:.2f}" for k, v in sorted(self.reward_mean.items()))
        loss = "-" if self.train_loss is None else f"{self.train_loss:.3f}"
        acc = "-" if self.accuracy is None else f"{self.accuracy:.3f}"
        new = sum(self.added.values())
        out = "".join(f", {_counted(n, kind)}" for kind, n in self.left_out.items())
        return (f"iter {self.iteration}: teacher {self.teacher} r={self.mask_ratio:.2f} | +{new} rows{out} | "
                f"snapshot {self.snapshot} (v{self.catalog_version}, {self.rows} rows) | reward {rm} | "
                f"train loss {loss} | accuracy {acc} | {self.seconds:.0f}s")


def _counted(n: int, kind: str) -> str:
    """'4 empty responses', '1 group skipped' (``kind`` in the plural: 'groups skipped')."""
    return " ".join([str(n)] + [w[:-1] if n == 1 and w.endswith("s") else w for w in kind.split()])


def iteration_left_out(catalog: Catalog, scope) -> dict[str, int]:
    """What the iteration's Gen-Data stages left out by design, counted from the catalog (the
    same whatever launcher produced it)."""
    out: dict[str, int] = {}
    for s in ITERATION_STAGES:
        for kind, n in left_out(s, catalog, stage_scope(s, scope)).items():
            out[kind] = out.get(kind, 0) + n
    return out


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


def _trainer_config(student: Path, snapshot: Path, out: Path, config: RunConfig, seed: int,
                    progress: bool) -> GRPORunConfig:
    t = config.train.model_dump(exclude={"launcher", "accelerate_config", "num_processes"})
    return GRPORunConfig(model=str(student), snapshot=str(snapshot), output_dir=str(out),
                         seed=seed, progress=progress, print_logs=False, logging_steps=5, **t)


def _same_training(meta: dict, cfg: GRPORunConfig) -> bool:
    keep = lambda d: {k: v for k, v in d.items() if k not in ("output_dir", "progress", "print_logs")}  # noqa: E731
    return keep(meta.get("trainer_config", {})) == keep(cfg.model_dump())


def _launch(cfg: GRPORunConfig, config: RunConfig, scratch: Path) -> dict:
    """Train in ``accelerate launch`` worker processes (DeepSpeed ZeRO-3 across GPUs)."""
    scratch.mkdir(parents=True, exist_ok=True)
    cfg_file = scratch.parent / f"{scratch.name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config.train.accelerate_config:  # from the working directory, or else the checkout (configs/ ships there)
        cmd += ["--config_file", config_file(config.train.accelerate_config, "train.accelerate_config")]
    if config.train.num_processes:
        cmd += ["--num_processes", str(config.train.num_processes)]
    cmd += ["-m", "trainer", "grpo", str(cfg_file)]
    # the workers' stdout (their metrics line, DeepSpeed's log, which writes to stdout) is kept for a
    # failure's message; their stderr (the training bar, errors) goes to the console
    proc = subprocess.run(cmd, env={**os.environ, **quiet_env()}, stdout=subprocess.PIPE, text=True)
    cfg_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-20:])
        raise MastersError(f"training failed (exit {proc.returncode}): {' '.join(cmd)}"
                           + (f"\nits last output:\n{tail}" if tail else ""))
    return json.loads((scratch / META_NAME).read_text())["metrics"]


def train_student(student: Path, snapshot: Path, final: Path, config: RunConfig, seed: int, progress: bool) -> dict:
    """Train ``student`` on ``snapshot`` into ``final`` (whole or not at all; a finished training
    with the same settings is not redone), inline or under ``accelerate launch``."""
    scratch = final.with_name(f".{final.name}.partial")
    cfg = _trainer_config(student, snapshot, scratch, config, seed, progress)
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
        report: Callable[[IterationSummary], None] | None = None, launcher: Launcher | None = None,
        through: int | None = None) -> RunResult:
    """Run (or resume) every iteration of ``config`` against ``catalog`` (iterations 0..``through``
    only, when given). Gen-Data stages run on ``launcher`` (default: the one ``config.production``
    asks for, inline or Ray shards)."""
    if through is not None and not 0 <= through < config.iterations:
        raise MastersError(f"--through {through}: run {config.run_id} has iterations 0..{config.iterations - 1}")
    started = time.perf_counter()
    plan = RunPlan.build(config, catalog.config, progress)
    # files of a killed earlier run: all of them when no one else writes, else those older than an
    # hour (a shared catalog's other writers may have files in flight)
    catalog.delete_orphaned_files(older_than=None if catalog.single_writer else timedelta(hours=1))
    ensure_questions(catalog, config)
    own = launcher is None
    launcher = launcher or make_launcher(config.production, progress)
    try:
        return _run(plan, catalog, launcher, progress, report, started,
                    config.iterations if through is None else through + 1)
    finally:
        if own:
            launcher.close()


def _run(plan: RunPlan, catalog: Catalog, launcher: Launcher, progress: bool,
         report: Callable[[IterationSummary], None] | None, started: float, count: int) -> RunResult:
    config = plan.config
    # the starting student, and the teachers' own accuracy for comparison
    start_acc, *_ = evaluate_checkpoints(catalog, plan, launcher, [plan.start_student], iteration=-1)
    evaluate_checkpoints(catalog, plan, launcher, plan.teachers, iteration=None)
    if plan.references:  # registered (by name) so that the report and the table can say what they are
        catalog.append("models", [model_row(r, "reference") for r in plan.references], "register reference models",
                       stage="register")
        evaluate_checkpoints(catalog, plan, launcher, plan.references, iteration=None)
    summaries = []
    for p in plan.iterations[:count]:
        t0 = time.perf_counter()
        i, student = p.index, plan.student_for(p.index)
        scope = plan.scope(i)
        produced = produce_iteration(catalog, scope, launcher, progress=progress)
        faults.point("produced")
        snap = create_snapshot(catalog, p.snapshot, plan.reward.id, iteration=i, run_id=config.run_id,
                               progress=progress)
        faults.point("snapshot")
        means = queries.reward_means(catalog, produced.iteration_id, plan.reward.id)
        dropped = iteration_left_out(catalog, scope)
        p.trained.parent.mkdir(parents=True, exist_ok=True)
        metrics = train_student(student, snap.path, p.trained, config, p.train_seed, progress)
        row = model_row(p.trained, "student", f"{config.run_id}/student@iter{i + 1}",
                        parent_model_id=ids.checkpoint_id(student))
        catalog.append("models", [row], f"register student iter{i + 1}", stage="register", iteration=i)
        faults.point("registered")
        (acc,) = evaluate_checkpoints(catalog, plan, launcher, [p.trained], iteration=i)
        summary = IterationSummary(
            iteration=i, mask_ratio=p.mask_ratio, teacher=p.teacher_ref, student_in=str(student),
            student_out=str(p.trained), snapshot=snap.name, catalog_version=snap.catalog_version,
            rows=snap.num_rows, added=produced.added, reward_mean=means,
            train_loss=metrics.get("train_loss"), accuracy=acc["accuracy"], per_type=acc["per_type"],
            seconds=time.perf_counter() - t0, left_out=dropped)
        summaries.append(summary)
        if report:
            report(summary)
    result = RunResult(config.run_id, start_acc, summaries, plan.student_for(count), time.perf_counter() - started)
    write_json(plan.out / "run.json", result.to_json())
    return result
