"""`masters ablate`: the paper's comparisons on the embedded task, several seeds, equal training
budget (the same optimizer steps x batch size for every trained arm):

- ``base``: the starting student, untrained;
- ``naive``: SFT on the largest teacher's (unmasked) responses, all steps in one go;
- ``progressive``: mask-progressive distillation without rewards: each iteration, SFT on the
  masked teacher's responses (the ladder and the mask schedule of the run);
- ``masters``: the full loop (mask-progressive Gen-Data + rewards + offline GRPO);
- ``masters-one-teacher``: the full loop with the largest teacher from the first iteration;
- ``sft-ground-truth``: the upper bound, SFT on the train questions' ground-truth answers, all
  steps in one go.

All Gen-Data goes through the catalog (one run id per arm and seed), so every arm can be queried
and re-scored like a normal run. Each arm is reported as its mean with a 95% t-interval over
the seeds, and each adjacent pair of the paper's ordering (``ORDERING``) as the paired
difference (same seed) with its interval and whether the ordering holds."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from catalog import Catalog
from catalog.snapshots import create_snapshot
from gendata.questions import QuestionSet
from masters.loop import ensure_questions, evaluate_checkpoints, run
from masters.plan import RunPlan, resolve_model, run_dir
from masters.production import Launcher, make_launcher, produce_iteration
from masters.run_config import RunConfig
from masters.sft_data import write_sft_folder
from masters.stages import queries
from masters.stats import mean_ci, paired_difference, verdict
from schemas.errors import ConfigError
from trainer.checkpoints import META_NAME
from trainer.config import SFTRunConfig
from trainer.sft import train_sft

ARMS = ("base", "naive", "progressive", "masters", "masters-one-teacher", "sft-ground-truth")
# the paper's claims, each "first > second"; the upper bound is compared with the full loop
ORDERING = (("masters", "progressive"), ("progressive", "naive"), ("naive", "base"),
            ("masters", "masters-one-teacher"), ("sft-ground-truth", "masters"))


def _sft(student: Path, snapshot: Path, out: Path, steps: int, cfg: RunConfig, seed: int) -> Path:
    if (out / META_NAME).is_file():
        return out
    scratch = out.with_name(f".{out.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    train_sft(SFTRunConfig(model=str(student), snapshot=str(snapshot), output_dir=str(scratch), max_steps=steps,
                           batch_size=cfg.train.batch_size, learning_rate=cfg.train.learning_rate,
                           lr_scheduler="constant", warmup_steps=0, seed=seed, logging_steps=max(1, steps // 4),
                           progress=False))
    shutil.rmtree(scratch / "trainer_state", ignore_errors=True)
    scratch.rename(out)
    return out


def _teacher_only(catalog: Catalog, plan: RunPlan, launcher: Launcher, i: int, student: Path, progress: bool,
                  teacher: Path | None = None, ratio: float | None = None) -> Path:
    """One iteration of teacher-only Gen-Data (as many responses per question as the loop's
    teacher + student; scored against the current ``student``), snapshotted: the SFT arms' data."""
    scope = plan.scope(i, student=student, teacher=teacher, mask_ratio=ratio, teacher_only=True)
    produce_iteration(catalog, scope, launcher, progress=progress)
    return create_snapshot(catalog, plan.iterations[i].snapshot, plan.reward.id, iteration=i, run_id=plan.run_id,
                           progress=False).path


def arm_config(base: RunConfig, arm: str, seed: int, steps: int) -> RunConfig:
    """One arm at one seed; the run id names everything that changes the arm's result, so a
    different budget never reuses it."""
    cfg = base.model_copy(update={"run_id": f"{base.run_id}-{arm}-i{base.iterations}-k{steps}-s{seed}", "seed": seed,
                                  "train": base.train.model_copy(update={"max_steps": steps})})
    if arm == "masters-one-teacher":
        cfg = cfg.model_copy(update={"teachers": [base.teachers[-1].model_copy(update={"start": 0})]})
    return cfg


def arm_accuracy(catalog: Catalog, base: RunConfig, arm: str, seed: int, steps: int, progress: bool = True,
                 launcher: Launcher | None = None) -> float:
    """Held-out accuracy of one arm at one seed (training ``steps`` optimizer steps per iteration)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
    cfg = arm_config(base, arm, seed, steps)
    own = launcher is None
    launcher = launcher or make_launcher(cfg.production, progress)
    try:
        if arm in ("masters", "masters-one-teacher"):
            return run(cfg, catalog, progress=progress, launcher=launcher).iterations[-1].accuracy
        plan = RunPlan.build(cfg, catalog.config, progress)
        student = plan.start_student
        if arm == "base":
            final, iteration = student, -1
        elif arm == "sft-ground-truth":
            qs, images = queries.split_questions(catalog, "train")
            truth = plan.out / "data" / "sft-ground-truth"
            if not (truth / "manifest.json").is_file():
                shutil.rmtree(truth, ignore_errors=True)
                write_sft_folder(QuestionSet(qs, images), truth, f"{cfg.run_id}-ground-truth")
            final, iteration = _sft(student, truth, plan.out / "students" / "sft-ground-truth",
                                    steps * cfg.iterations, cfg, seed), cfg.iterations - 1
        elif arm == "naive":
            largest = resolve_model(cfg.teachers[-1].model, progress)
            snap = _teacher_only(catalog, plan, launcher, 0, student, progress, teacher=largest, ratio=0.0)
            final, iteration = _sft(student, snap, run_dir(cfg, catalog.config) / "students" / "naive",
                                    steps * cfg.iterations, cfg, seed), cfg.iterations - 1
        else:  # progressive
            for p in plan.iterations:
                snap = _teacher_only(catalog, plan, launcher, p.index, student, progress)
                student = _sft(student, snap, p.trained, steps, cfg, p.train_seed)
            final, iteration = student, cfg.iterations - 1
        (acc,) = evaluate_checkpoints(catalog, plan, launcher, [final], iteration=iteration)
        return acc["accuracy"]
    finally:
        if own:
            launcher.close()


def summarise(per_arm: dict[str, dict[int, float]]) -> tuple[list[dict], list[dict]]:
    """(arms with mean and 95% interval, the ordering's paired differences with verdicts)."""
    arms = []
    for arm, by_seed in per_arm.items():
        ci = mean_ci(list(by_seed.values()))
        arms.append({"arm": arm, "mean": ci.mean, "ci95": ci.half_width, "low": ci.low, "high": ci.high,
                     "seeds": sorted(by_seed), "per_seed": [by_seed[s] for s in sorted(by_seed)]})
    pairs = []
    for first, second in ORDERING:
        if first in per_arm and second in per_arm:
            d = paired_difference(per_arm[first], per_arm[second])
            pairs.append({"first": first, "second": second, "mean": d.mean, "ci95": d.half_width, "low": d.low,
                          "high": d.high, "n": d.n, "verdict": verdict(d)})
    return arms, pairs


def ablate(catalog: Catalog, base: RunConfig, seeds: list[int], steps: int, arms: tuple[str, ...] = ARMS,
           progress: bool = True, on_result: Callable[[str, int, float], None] | None = None) -> dict:
    """Every arm at every seed; mean with a 95% interval per arm, paired differences of the
    paper's ordering."""
    if base.train.gradient_accumulation_steps != 1 or base.train.updates_per_batch != 1:
        raise ConfigError("ablate compares SFT and GRPO arms step for step: set train.gradient_accumulation_steps "
                          "and train.updates_per_batch to 1")
    ensure_questions(catalog, base)
    per_arm: dict[str, dict[int, float]] = {}
    started = time.perf_counter()
    launcher = make_launcher(base.production, progress)  # one (Ray) pool for every arm
    try:
        for arm in arms:
            per_arm[arm] = {}
            for seed in ([seeds[0]] if arm == "base" else seeds):  # the base student has no randomness
                acc = arm_accuracy(catalog, base, arm, seed, steps, progress, launcher)
                per_arm[arm][seed] = acc
                if on_result:
                    on_result(arm, seed, acc)
    finally:
        launcher.close()
    results, pairs = summarise(per_arm)
    budget = steps * base.iterations * base.train.batch_size
    note = (f"{base.iterations} iterations, {steps} optimizer steps x batch {base.train.batch_size} per iteration "
            f"({budget} training rows seen per trained arm), seeds {seeds}, {base.questions.train} train questions, "
            f"held-out split {base.eval.split!r}; mean with its 95% t-interval over the seeds; differences paired "
            "by seed")
    out = {"note": note, "arms": results, "pairs": pairs, "seeds": seeds, "steps_per_iteration": steps,
           "base_run_id": base.run_id, "seconds": round(time.perf_counter() - started, 1)}
    path = run_dir(base, catalog.config).parent / f"{base.run_id}-ablation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    out["path"] = str(path)
    return out
