"""`masters ablate --sweep KEY=V1,V2,...`: the full loop at each value of one setting, each point
a run in the catalog under its own run id, at every seed.

Two kinds of keys:

- **reward and judge keys** (``reward.*``, ``judge``, ``judge.*``) change only verdicts and
  rewards. Their points do not generate: the *reference run* (the base config's full loop at that
  seed) produces the Gen-Data once, and every point replays it — judges what its judge has not
  judged yet, adds its own reward rows (``masters rescore``), snapshots each iteration under its
  reward config and trains its own students on them, offline. No response or token_stats row is
  added by a point.
- **generation keys** (everything else: ``responses`` = teacher+student responses per question,
  ``mask.r_max``, ``sampling.*``...) change what is generated: each point is a full run with its own
  Gen-Data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from catalog import Catalog
from catalog.snapshots import create_snapshot
from masters.ablate import arm_config
from masters.loop import ensure_questions, evaluate_checkpoints, run, train_student
from masters.plan import RunPlan, run_dir
from masters.production import Launcher, make_launcher
from masters.rescore import judge_missing, rescore
from masters.run_config import RunConfig
from masters.stages.registration import model_row
from masters.stats import mean_ci
from schemas import ids
from schemas.config import set_dotted
from schemas.errors import ConfigError

REPLAY_KEYS = ("reward", "judge")


def parse_sweep(spec: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` -> (key, values), each value read as YAML (``0.5`` is a number)."""
    import yaml

    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ConfigError(f"--sweep {spec!r}: write KEY=V1,V2,... (e.g. reward.w_distill=0,0.5,1,2)")
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if len(parsed) < 2:
        raise ConfigError(f"--sweep {spec!r}: a sweep needs at least two values")
    return key, parsed


def replays(key: str) -> bool:
    """Whether the points of a sweep over ``key`` re-use the reference run's Gen-Data."""
    return key.split(".")[0] in REPLAY_KEYS


def with_value(config: RunConfig, key: str, value, where: str = "--sweep") -> RunConfig:
    """``config`` with ``key`` set to ``value`` (dotted keys; ``responses``: 'T+S' responses per
    question; ``judge``: a judge kind), validated like a config file."""
    doc = config.model_dump(mode="json", exclude_none=True)
    if key == "responses":
        m = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*", str(value))
        if not m:
            raise ConfigError(f"{where} responses={value!r}: write teacher+student responses per question, e.g. 4+4")
        doc["teacher_responses"], doc["student_responses"] = int(m.group(1)), int(m.group(2))
    elif key == "judge":
        doc["judge"] = {"kind": value}
    else:
        if key.split(".")[0] == "mask" and "mask" not in doc:  # the default schedule, made explicit
            doc["mask"] = {"iterations": config.iterations}
        set_dotted(doc, key, value, where)
    return RunConfig.parse(doc, where=f"{where} {key}={value}")


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(value)).strip("_") or "x"


def point_config(base: RunConfig, key: str, value, seed: int, steps: int) -> RunConfig:
    cfg = arm_config(with_value(base, key, value), "masters", seed, steps)
    return cfg.model_copy(update={"run_id": f"{base.run_id}-sweep-{_slug(key)}-{_slug(value)}-i{base.iterations}"
                                            f"-k{steps}-s{seed}"})


def replay(catalog: Catalog, point: RunConfig, reference: RunConfig, launcher: Launcher,
           progress: bool = True) -> float:
    """Train ``point``'s students on ``reference``'s Gen-Data under ``point``'s judge and reward
    weights (nothing generated, nothing scored); its held-out accuracy after the last iteration."""
    plan = RunPlan.build(point, catalog.config, progress)
    student = plan.start_student
    for p in plan.iterations:
        judge_missing(catalog, plan.judge, iteration=p.index, run_id=reference.run_id)
        rescore(catalog, plan.reward, iteration=p.index, run_id=reference.run_id)
        snap = create_snapshot(catalog, p.snapshot, plan.reward.id, iteration=p.index, run_id=reference.run_id,
                               progress=False)
        p.trained.parent.mkdir(parents=True, exist_ok=True)
        train_student(student, snap.path, p.trained, point, p.train_seed, progress)
        row = model_row(p.trained, "student", f"{point.run_id}/student@iter{p.index + 1}",
                        parent_model_id=ids.checkpoint_id(student))
        catalog.append("models", [row], f"register student iter{p.index + 1}", stage="register", iteration=p.index)
        student = p.trained
    # held-out accuracy is marked by the reference's judge, so that a judge sweep compares like with like
    marker = plan if point.judge == reference.judge else RunPlan.build(
        point.model_copy(update={"judge": reference.judge}), catalog.config, progress)
    (acc,) = evaluate_checkpoints(catalog, marker, launcher, [student], iteration=point.iterations - 1)
    return acc["accuracy"]


def sweep(catalog: Catalog, base: RunConfig, key: str, values: list, seeds: list[int], steps: int,
          progress: bool = True, on_result: Callable[[object, int, float], None] | None = None) -> dict:
    """Every value at every seed: held-out accuracy after the last iteration, mean with its 95%
    interval per value."""
    if base.train.gradient_accumulation_steps != 1 or base.train.updates_per_batch != 1:
        raise ConfigError("a sweep trains step for step like the ablation: set train.gradient_accumulation_steps "
                          "and train.updates_per_batch to 1")
    points = [{s: point_config(base, key, v, s, steps) for s in seeds} for v in values]  # validated up front
    ensure_questions(catalog, base)
    started = time.perf_counter()
    rows = []
    launcher = make_launcher(base.production, progress)
    try:
        for value, by_seed in zip(values, points):
            accuracy = {}
            for seed, cfg in by_seed.items():
                if replays(key):
                    reference = arm_config(base, "masters", seed, steps)
                    run(reference, catalog, progress=progress, launcher=launcher)  # resumes: done once per seed
                    accuracy[seed] = replay(catalog, cfg, reference, launcher, progress)
                else:
                    accuracy[seed] = run(cfg, catalog, progress=progress, launcher=launcher).iterations[-1].accuracy
                if on_result:
                    on_result(value, seed, accuracy[seed])
            ci = mean_ci(list(accuracy.values()))
            rows.append({"value": str(value), "mean": ci.mean, "ci95": ci.half_width, "low": ci.low, "high": ci.high,
                         "per_seed": [accuracy[s] for s in seeds], "run_ids": [c.run_id for c in by_seed.values()]})
    finally:
        launcher.close()
    out = {"key": key, "values": [str(v) for v in values], "seeds": seeds, "steps_per_iteration": steps,
           "replays_gendata": replays(key),
           "reference_run_ids": [arm_config(base, "masters", s, steps).run_id for s in seeds] if replays(key) else [],
           "points": rows, "seconds": round(time.perf_counter() - started, 1),
           "note": (f"sweep of {key} over {', '.join(str(v) for v in values)}: {base.iterations} iterations, "
                    f"{steps} optimizer steps per iteration, seeds {seeds}; "
                    + ("each point trained on the reference run's Gen-Data (no generation)" if replays(key)
                       else "each point generates its own Gen-Data"))}
    path = run_dir(base, catalog.config).parent / f"{base.run_id}-sweep-{_slug(key)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    out["path"] = str(path)
    return out

