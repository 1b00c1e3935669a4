"""One iteration's Gen-Data production (register, generate teacher + student, score, judge,
reward; the demo config: tiny ladder, 96 questions, 4 + 4 responses) run three ways in the same
process, each into a fresh catalog:

1. inline, 1 torch thread;
2. inline, 2 torch threads (the baseline: all of these 2 cores in one process);
3. Ray, 2 shards x 1 thread (two actors, the driver registering each batch).

Printed: wall time and responses/s of each, the ratio of each to the baseline (goal: Ray 2 shards
>= 1.3x inline with 2 threads), and Ray's fixed start-up cost (ray.init + actors ready), which is
paid once per run, not per stage. Then the production overhead: the inline 2-thread wall time
against the floor of the same models doing only the model work, in the same process: bare
``generate`` of the same number of responses per question (the backend's call, one question at a
time) + one teacher-forced forward of each model over the same responses (goal <= 1.5x).

    python benchmarks/shards.py                 # the demo's iteration 0 (teacher M at r = 0.2)
    python benchmarks/shards.py --quick         # 12 questions, 2 + 2 responses (seconds)
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from catalog import Catalog
from gendata.backends import question_seed
from gendata.hf_generate import generate
from gendata.masking import masked
from gendata.scoring import _teacher_forced_inputs
from masters.demo import demo_config
from masters.loop import ensure_questions
from masters.plan import RunPlan
from masters.production import InlineLauncher, produce_iteration
from masters.stages import ModelCache, queries


def config(questions: int, responses: int):
    return demo_config(iterations=1).model_copy(update={
        "questions": demo_config().questions.model_copy(update={"train": questions, "test": 8}),
        "teacher_responses": responses, "student_responses": responses})


def produce(root: Path, name: str, cfg, launcher) -> tuple[float, int, Catalog]:
    cat = Catalog.open(root / name)
    ensure_questions(cat, cfg)
    scope = RunPlan.build(cfg, cat.config, progress=False).scope(0)
    t0 = time.perf_counter()
    produce_iteration(cat, scope, launcher)
    seconds = time.perf_counter() - t0
    return seconds, cat.count("responses"), cat


def floor(cat: Catalog, cfg) -> tuple[float, float]:
    """(generate seconds, forward seconds) of the bare model work behind the catalog's iteration:
    models preloaded, the same sampling, prompts, images and responses."""
    plan = RunPlan.build(cfg, cat.config, progress=False)
    scope = plan.scope(0)
    spec, s = scope.spec, scope.spec.sampling
    models = ModelCache()
    qs = queries.questions_with_images(cat, spec.split).to_pylist()
    t_gen = 0.0
    for folder, ratio, n in ((spec.teacher, spec.mask_ratio, spec.teacher_responses),
                             (spec.student, 0.0, spec.student_responses)):
        model, processor = models.get(folder)
        mplan = models.mask_plan(folder, ratio)
        t0 = time.perf_counter()
        with masked(model, ratio, mplan):
            for q in qs:
                generate(model, processor, [q["question"]], [q["bytes"]], n=n, do_sample=True,
                         temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                         repetition_penalty=s.repetition_penalty, max_new_tokens=s.max_new_tokens,
                         seed=question_seed(spec.seed, q["question_id"]), batch_size=1)
        t_gen += time.perf_counter() - t0
    teacher, processor = models.get(spec.teacher)
    student, _ = models.get(spec.student)
    images = {q["question_id"]: q["bytes"] for q in qs}
    groups: dict[str, tuple[str, list]] = {}
    for r in queries.iteration_responses(cat, scope.iteration_id).to_pylist():
        if r["token_ids"]:
            groups.setdefault(r["question_id"], (r["prompt"], []))[1].append(r["token_ids"])
    t0 = time.perf_counter()
    with torch.no_grad(), masked(teacher, spec.mask_ratio, models.mask_plan(spec.teacher, spec.mask_ratio)):
        for qid, (prompt, comps) in groups.items():
            inputs, _ = _teacher_forced_inputs(student, processor, prompt, images[qid], comps)
            teacher(**inputs).logits.sum()
            student(**inputs).logits.sum()
    return t_gen, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=96)
    ap.add_argument("--responses", type=int, default=4, help="per source per question")
    ap.add_argument("--quick", action="store_true", help="12 questions, 2 + 2 responses")
    a = ap.parse_args()
    if a.quick:
        a.questions, a.responses = 12, 2
    warnings.filterwarnings("ignore")
    import ray

    from masters.ray_launcher import RayLauncher

    cfg = config(a.questions, a.responses)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = InlineLauncher(threads=2)  # compile the summary kernel and fill the page cache once
        produce(root, "warm-up", config(4, 1), warm)[2].close()
        warm.close()
        for name, threads in (("inline, 1 thread", 1), ("inline, 2 threads (baseline)", 2)):
            launcher = InlineLauncher(threads=threads)
            seconds, n, cat = produce(root, f"inline-{threads}", cfg, launcher)
            rows.append((name, seconds, n, launcher.models.loads))
            launcher.close()
            if threads == 2:
                torch.set_num_threads(2)
                t_gen, t_fwd = floor(cat, cfg)
                baseline = seconds
            cat.close()
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        init = time.perf_counter() - t0
        with_ray = {"production": cfg.production.model_copy(update={"launcher": "ray", "shards": 2,
                                                                     "threads_per_shard": 1})}
        shards = cfg.model_copy(update=with_ray)
        t0 = time.perf_counter()
        launcher = RayLauncher(shards.production)
        actors = time.perf_counter() - t0
        # first use in each actor, as the inline runs had it above: the summary kernel compiled (the
        # models are released after it, as after any iteration, so the measured run loads them again)
        t0 = time.perf_counter()
        produce(root, "ray-warm-up", config(4, 1).model_copy(update=with_ray), launcher)[2].close()
        first_use = time.perf_counter() - t0
        loads_before = launcher.model_loads()
        seconds, n, cat = produce(root, "ray", shards, launcher)
        rows.append(("Ray, 2 shards x 1 thread", seconds, n, launcher.model_loads() - loads_before))
        launcher.close()
        cat.close()
        ray.shutdown()
    startup = init + actors
    print(f"one iteration of the demo config: {a.questions} questions, {a.responses} + {a.responses} responses, "
          f"teacher M at r = 0.2; same process, fresh catalog each")
    print(f"{'':32}{'wall s':>9}{'responses':>11}{'resp/s':>9}{'vs baseline':>13}{'model loads':>13}")
    for name, seconds, n, loads in rows:
        print(f"{name:32}{seconds:9.1f}{n:11d}{n / seconds:9.2f}{baseline / seconds:12.2f}x{loads:13d}")
    ray_s = rows[-1][1]
    print(f"Ray 2 shards / inline 2 threads, throughput: {baseline / ray_s:.2f}x (goal >= 1.3x); "
          f"with the start-up counted: {baseline / (ray_s + startup):.2f}x")
    print(f"Ray start-up (ray.init {init:.1f} s + 2 actors ready {actors:.1f} s): {startup:.1f} s, once per run; "
          f"first use in the actors (a 4-question warm-up: summary kernel compiled, models loaded): {first_use:.1f} s")
    print(f"floor (inline, 2 threads, models loaded): bare generate {t_gen:.1f} s + one teacher-forced forward "
          f"of both models {t_fwd:.1f} s = {t_gen + t_fwd:.1f} s")
    print(f"production / floor: {baseline / (t_gen + t_fwd):.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
