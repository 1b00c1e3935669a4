"""The prepared GPU check: one command, nothing downloaded (the tiny ladder is built from configs,
or reused from the cache / ``--ladder``), a few minutes on one GPU. Each check prints its figures
and PASS / FAIL; the exit status is 1 when one failed.

1. vLLM generation from the tiny ladder: teacher L masked at 0.2 (a streamed masked export) vs
   unmasked, same per-question seeds: the outputs differ; a re-run reproduces them; the
   behaviour log-probs come back one per token.
2. bf16 scoring on the GPU vs fp32 scoring on the CPU, same responses: within the stated
   tolerance (mean |delta| of the stored log-probs <= 0.05 nats, of the per-token JSD <= 0.01).
3. One whole iteration on the GPU: vLLM generation, bf16 teacher placed by device_map, scoring,
   judging, rewards, a snapshot and one GRPO step under DeepSpeed ZeRO-3 (`accelerate launch`,
   one process), with the behaviour-vs-teacher-forced log-prob mismatch of the report.
4. Throughput: responses/s of the vllm and transformers backends on the same questions.

    python benchmarks/gpu_check.py [--ladder DIR] [--questions 64] [--cpu]

``--cpu`` runs what a CPU machine can (no vLLM: checks 2 to 4 with the transformers backend and
ZeRO-3 on the CPU), to check the script itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
LOGPROB_TOL, JSD_TOL = 0.05, 0.01
RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS.append((name, ok, detail))
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)


def questions(n: int, split: str = "test"):
    from gendata.synthetic_vqa import synthetic_vqa

    qs = synthetic_vqa(n, split, seed=11)
    rows = qs.questions.to_pylist()
    images = {r["image_id"]: r["bytes"] for r in qs.images.to_pylist()}
    import pyarrow as pa

    table = pa.table({"question_id": [r["question_id"] for r in rows], "question": [r["question"] for r in rows]})
    return table, {r["question_id"]: images[r["image_id"]] for r in rows}


def generate(engine, table, images, n: int, ratio: float, max_new_tokens: int = 24) -> list[dict]:
    from gendata.backends import SamplingConfig, generate_responses

    return [r for t in generate_responses(engine, table, images, iteration_id="gpu-check", source="teacher",
                                          model_id="L", mask_ratio=ratio, n=n, seed=7,
                                          sampling=SamplingConfig(max_new_tokens=max_new_tokens))
            for r in t.to_pylist()]


def check_vllm_generation(ladder: Path, table, images, throughput_table) -> tuple[list[dict], float]:
    """The masked-vs-unmasked checks; the unmasked engine then measures vLLM's throughput (one
    engine start fewer)."""
    from gendata.backends import VLLMBackend

    out, rate = {}, 0.0
    for ratio in (0.2, 0.0):
        started = time.perf_counter()
        eng = VLLMBackend(str(ladder / "L"), mask_ratio=ratio, gpu_memory_utilization=0.3,
                          enforce_eager=ratio > 0)  # the throughput engine keeps its CUDA graphs
        print(f"  vLLM engine (mask {ratio}) ready in {time.perf_counter() - started:.0f} s")
        out[ratio] = generate(eng, table, images, 4, ratio)
        if ratio == 0.2:
            again = generate(eng, table, images, 4, ratio)
        else:
            rate = responses_per_second(eng, throughput_table, images)
        eng.close()
    masked, plain = out[0.2], out[0.0]
    differ = sum(a["token_ids"] != b["token_ids"] for a, b in zip(masked, plain))
    check("vLLM: masked vs unmasked teacher", differ > len(masked) // 4,
          f"{differ} of {len(masked)} responses differ (same per-question seeds)")
    same = sum(a["token_ids"] == b["token_ids"] for a, b in zip(masked, again))
    check("vLLM: per-question seeds reproduce", same == len(masked), f"{same} of {len(masked)} identical on a re-run")
    per_token = all(r["behaviour_logprobs"] is not None and len(r["behaviour_logprobs"]) == r["num_tokens"]
                    for r in masked)
    check("vLLM: behaviour log-probs", per_token, "one per generated token" if per_token else "missing")
    return masked, rate


SAMPLES, TOKENS = 8, 32  # the throughput workload: samples per question, tokens at most


def responses_per_second(engine, table, images) -> float:
    generate(engine, table.slice(0, 2), images, SAMPLES, 0.0)  # warm-up
    started = time.perf_counter()
    rows = generate(engine, table, images, SAMPLES, 0.0, max_new_tokens=TOKENS)
    return len(rows) / (time.perf_counter() - started)


def check_bf16_scoring(ladder: Path, table, images, responses: list[dict], device: str) -> None:
    from gendata.hf_generate import load_vlm
    from gendata.masking import plan_masks
    from gendata.placement import Placement
    from gendata.scoring import ScoringConfig, score_group

    prompt_of = dict(zip(table.column("question_id").to_pylist(), table.column("question").to_pylist()))
    by_q: dict[str, list] = {}
    for r in responses:
        if r["token_ids"]:
            by_q.setdefault(r["question_id"], []).append(r["token_ids"])
    got = {}
    for name, placement, where in (("bf16", Placement(dtype="bfloat16"), device), ("fp32", Placement(), "cpu")):
        t, proc = load_vlm(ladder / "L", device=where, placement=placement)
        s, _ = load_vlm(ladder / "student", device=where, placement=placement)
        plan = plan_masks(t, [0.2])
        started = time.perf_counter()
        got[name] = [x for q, comps in by_q.items() for x in score_group(
            t, s, proc, prompt_of[q], images[q], comps, 0.2, plan, ScoringConfig(compile=where == "cpu"))]
        print(f"  {name} scoring on {where}: {len(got[name])} responses in {time.perf_counter() - started:.1f} s")
        del t, s
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    d_lp = np.concatenate([np.abs(a.teacher_logprobs - b.teacher_logprobs) for a, b in zip(got["bf16"], got["fp32"])]
                          + [np.abs(a.student_logprobs - b.student_logprobs) for a, b in zip(got["bf16"], got["fp32"])])
    d_jsd = np.concatenate([np.abs(a.jsd - b.jsd) for a, b in zip(got["bf16"], got["fp32"])])
    top1 = np.mean(np.concatenate([a.topk_ids[:, 0] == b.topk_ids[:, 0] for a, b in zip(got["bf16"], got["fp32"])]))
    check(f"bf16 scoring on {device} vs fp32 on cpu", d_lp.mean() <= LOGPROB_TOL and d_jsd.mean() <= JSD_TOL,
          f"log-prob |delta| mean {d_lp.mean():.4f} max {d_lp.max():.4f} (tol {LOGPROB_TOL}); JSD |delta| mean "
          f"{d_jsd.mean():.5f} max {d_jsd.max():.5f} (tol {JSD_TOL}); teacher top-1 agreement {top1:.3f}; "
          f"{d_jsd.size} tokens")


def check_iteration(ladder: Path, work: Path, use_vllm: bool) -> None:
    from catalog import Catalog
    from masters.loop import run
    from masters.mismatch import logprob_mismatch
    from masters.run_config import RunConfig

    cfg = RunConfig.parse({
        "run_id": "gpu-check", "iterations": 1, "questions": {"train": 16, "test": 16},
        "student": str(ladder / "student"),
        "teachers": [{"model": str(ladder / "L"), "dtype": "bfloat16", "device_map": "auto"}],
        "mask": {"kind": "constant", "r_max": 0.2, "iterations": 1},
        "teacher_responses": 2, "student_responses": 2, "sampling": {"max_new_tokens": 12},
        "backend": "vllm" if use_vllm else "transformers",
        "vllm": {"gpu_memory_utilization": 0.3, "enforce_eager": True},
        "train": {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-4, "launcher": "accelerate",
                  "accelerate_config": str(ROOT / "configs/accelerate/zero3.yaml"), "num_processes": 1},
        "eval": {"max_new_tokens": 8}}, where="gpu_check")
    started = time.perf_counter()
    with Catalog.open(work / "catalog") as cat:
        result = run(cfg, cat, progress=False)
        mismatch = logprob_mismatch(cat, "gpu-check")
        rows = cat.sql("SELECT (SELECT count(*) FROM responses) AS r, (SELECT count(*) FROM token_stats) AS s, "
                       "(SELECT count(*) FROM rewards) AS w").to_pylist()[0]
    it = result.iterations[0]
    trained = Path(it.student_out)
    check("one iteration, ZeRO-3 GRPO step", (trained / "config.json").exists() and rows["r"] == rows["s"] and rows["w"] > 0,
          f"{rows['r']} responses, {rows['s']} scored, {rows['w']} rewarded (unparseable answers get none); student trained -> {trained.name}, accuracy "
          f"{it.accuracy:.3f}, {time.perf_counter() - started:.0f} s")
    for m in mismatch:
        print(f"  behaviour vs teacher-forced log-probs, {m['source']:7s}: mean |delta| {m['mean_abs']:.2e}, "
              f"max {m['max_abs']:.2e} over {m['tokens']} tokens")


def check_throughput(ladder: Path, table, images, vllm_rate: float | None) -> None:
    from gendata.backends import TransformersBackend

    rates = {} if vllm_rate is None else {"vllm": vllm_rate}
    rates["transformers"] = responses_per_second(TransformersBackend(str(ladder / "L")), table, images)
    print(f"  {'backend':14s} {'responses/s':>12s}   ({table.num_rows} questions x {SAMPLES} samples, up to "
          f"{TOKENS} tokens, teacher L unmasked)")
    for name, rate in rates.items():
        print(f"  {name:14s} {rate:12.1f}")
    ratio = f"; vllm / transformers = {rates['vllm'] / rates['transformers']:.1f}x" if "vllm" in rates else ""
    check("throughput", all(r > 0 for r in rates.values()), ", ".join(f"{k} {v:.1f}/s" for k, v in rates.items()) + ratio)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ladder", type=Path, help="a tiny-ladder folder (default: build or reuse the cached one)")
    ap.add_argument("--questions", type=int, default=64, help="questions for generation and throughput")
    ap.add_argument("--cpu", action="store_true", help="no GPU: check the script with what a CPU can run")
    args = ap.parse_args()
    use_gpu = not args.cpu
    if use_gpu and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --cpu to check the script on a CPU", file=sys.stderr)
        return 2
    device = "cuda" if use_gpu else "cpu"
    import os

    os.chdir(ROOT)  # the accelerate config names the DeepSpeed one relative to the repository
    if use_gpu:
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
        try:
            import vllm

            print(f"vLLM {vllm.__version__}")
        except ImportError:
            print("vLLM is not installed (pip install -e '.[gpu]')", file=sys.stderr)
            return 2
    from masters.fixtures import ensure_ladder

    started = time.perf_counter()
    ladder = (args.ladder or ensure_ladder(progress=True)) / "models"
    table, images = questions(args.questions)
    workload = table if use_gpu else table.slice(0, 8)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        section = time.perf_counter()
        if use_gpu:
            responses, vllm_rate = check_vllm_generation(ladder, table.slice(0, 16), images, workload)
        else:
            from gendata.backends import TransformersBackend

            responses, vllm_rate = generate(TransformersBackend(str(ladder / "L"), mask_ratio=0.2), table.slice(0, 8),
                                            images, 4, 0.2), None
        for name, run_check in (("generation", None),
                                ("bf16 scoring", lambda: check_bf16_scoring(ladder, table, images, responses, device)),
                                ("iteration", lambda: check_iteration(ladder, Path(tmp), use_vllm=use_gpu)),
                                ("throughput", lambda: check_throughput(ladder, workload, images, vllm_rate))):
            if run_check is not None:
                run_check()
            print(f"  ({name}: {time.perf_counter() - section:.0f} s)", flush=True)
            section = time.perf_counter()
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed in {time.perf_counter() - started:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
