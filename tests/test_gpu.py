"""What needs a CUDA GPU (marked ``gpu``, skipped without one): the vLLM backend on a streamed
masked export, bf16 scoring on the GPU against fp32 on the CPU, and a ZeRO-3 GRPO step on the
GPU. ``benchmarks/gpu_check.py`` runs the same checks at a larger size in one command; its CPU
mode (``--cpu``) is run here on every machine, so the script itself stays working."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def question():
    from gendata.synthetic_vqa import synthetic_vqa

    qs = synthetic_vqa(4, "test")
    table = qs.questions.select(["question_id", "question"])
    images = dict(zip(qs.questions.column("question_id").to_pylist(), qs.images.column("bytes").to_pylist()))
    return table, images


@pytest.mark.gpu
@needs_gpu
def test_vllm_generates_from_a_streamed_masked_export(tiny_checkpoints, question):
    pytest.importorskip("vllm", reason="vLLM is not installed (the gpu extra)")
    from gendata.backends import VLLMBackend, generate_responses

    table, images = question
    out = {}
    for ratio in (0.5, 0.0):
        eng = VLLMBackend(str(tiny_checkpoints["qwen2_vl"]), mask_ratio=ratio, gpu_memory_utilization=0.2,
                          enforce_eager=True)
        out[ratio] = [r for t in generate_responses(eng, table, images, iteration_id="it", source="teacher",
                                                    model_id="m", mask_ratio=ratio, n=4, seed=3) for r in t.to_pylist()]
        eng.close()
    assert [r["token_ids"] for r in out[0.5]] != [r["token_ids"] for r in out[0.0]]  # the mask reached the engine
    assert all(len(r["behaviour_logprobs"]) == r["num_tokens"] for r in out[0.5])  # vLLM's log-probs are kept


@pytest.mark.gpu
@needs_gpu
def test_bf16_scoring_on_the_gpu_agrees_with_fp32_on_the_cpu(tiny_pair, question):
    from gendata.hf_generate import generate, load_vlm
    from gendata.placement import Placement
    from gendata.scoring import ScoringConfig, score_group

    student_dir, teacher_dir = tiny_pair("qwen2_vl")
    table, images = question
    qid, prompt = table.column("question_id")[0].as_py(), table.column("question")[0].as_py()
    s32, proc = load_vlm(student_dir, device="cpu")
    comps = [s.token_ids for s in generate(s32, proc, [prompt], [images[qid]], n=4, max_new_tokens=8, seed=2)[0]]
    bf16 = Placement(dtype="bfloat16", device_map="auto")
    t16, _ = load_vlm(teacher_dir, placement=bf16)
    s16, _ = load_vlm(student_dir, placement=bf16)
    assert t16.device.type == "cuda" and next(t16.parameters()).dtype == torch.bfloat16
    t32, _ = load_vlm(teacher_dir, device="cpu")
    got = score_group(t16, s16, proc, prompt, images[qid], comps, 0.0, None, ScoringConfig())
    ref = score_group(t32, s32, proc, prompt, images[qid], comps, 0.0, None, ScoringConfig())
    d_lp = np.concatenate([np.abs(a.teacher_logprobs - b.teacher_logprobs) for a, b in zip(got, ref)])
    d_jsd = np.concatenate([np.abs(a.jsd - b.jsd) for a, b in zip(got, ref)])
    assert d_lp.mean() <= 0.05 and d_jsd.mean() <= 0.01  # gpu_check.py's stated tolerance


@pytest.mark.gpu
@needs_gpu
def test_a_zero3_grpo_step_on_the_gpu(grpo_snapshot, tmp_path):
    student, _, snap = grpo_snapshot("qwen2_vl")
    out = tmp_path / "zero3"
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(student), "snapshot": str(snap), "output_dir": str(out),
                                   "max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "progress": False}))
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           "configs/accelerate/zero3.yaml", "--num_processes", "1", "-m", "trainer", "grpo", str(cfg)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["deepspeed"] is True and meta["metrics"]["steps"] == 1


@pytest.mark.slow
def test_gpu_check_script_runs_on_the_cpu():
    """The check script's CPU mode: what it can run without a GPU passes, and says so."""
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu", "--questions", "8"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "[FAIL]" not in proc.stdout and "3 of 3 checks passed" in proc.stdout
    assert "bf16 scoring on cpu vs fp32 on cpu" in proc.stdout and "ZeRO-3 GRPO step" in proc.stdout
    assert "behaviour vs teacher-forced log-probs, teacher" in proc.stdout
    assert "FutureWarning" not in proc.stderr  # ZeRO-3's deprecation warnings are kept off the console
