"""The offline GRPO step against two baselines measured in the same run, same model, same rows:

1. TRL's ``SFTTrainer`` on the snapshot's rows (prompt + image -> completion): tokens/s of a
   training step. Goal: the offline GRPO step takes <= 1.15x the SFT step's time per token.
2. TRL's online ``GRPOTrainer`` generating the same number of completions per step (transformers
   generation, the paper's sampling, KL to a reference model as the paper's beta = 0.1 needs):
   wall time per trained sample. The offline figure is also given with the cost of producing the
   Gen-Data (generation + teacher-forced scoring, per response) added, since offline pays that once.

    python benchmarks/trainer_step.py                  # qwen2_vl, hidden 256, 4 layers
    python benchmarks/trainer_step.py --family llava --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import GenerationConfig, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from catalog import Catalog
from catalog.snapshots import create_snapshot
from gendata.backends import SamplingConfig
from gendata.synthetic_vqa import synthetic_vqa
from gendata.tiny_vlm import FAMILIES, TinySize, build_tiny_vlm, train_tokenizer
from masters.production import produce_iteration
from masters.stages import IterationScope, IterationSpec
from masters.questions import ingest_questions
from rewards.judges import make_judge
from rewards.matching import match_answer
from schemas.config import RewardConfig
from schemas.prompts import user_message
from trainer.checkpoints import load_model_and_processor
from trainer.config import GRPORunConfig
from trainer.data import load_verified, to_prompt_completion
from trainer.grpo import build_trainer

warnings.filterwarnings("ignore")


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step."""

    def __init__(self):
        self.times, self._t = [], 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


def counting(cls):
    """A trainer subclass counting the real (unpadded) tokens each step's forward passes see."""

    class Counting(cls):
        tokens = 0

        def compute_loss(self, model, inputs, *a, **kw):
            if "prompt_mask" in inputs:
                Counting.tokens += int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
            else:
                Counting.tokens += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, *a, **kw)

    return Counting


def steady(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


def make_snapshot(root: Path, family: str, hidden: int, layers: int, questions: int, responses: int,
                  tokens: int) -> tuple[Path, Path, float, int]:
    qs = synthetic_vqa(120, "train")
    fam = FAMILIES[family]
    tok = train_tokenizer([q["question"] + " " + q["answer"] for q in qs.questions.to_pylist()],
                          fam.special_tokens, 400, fam.image_placeholder)
    heads = max(2, hidden // 64)
    student = build_tiny_vlm(family, TinySize(hidden, layers, heads, max(1, heads // 2), 32, 2, 2), tok,
                             root / "student", seed=0)
    teacher = build_tiny_vlm(family, TinySize(hidden * 2, layers, heads, max(1, heads // 2), 32, 2, 2), tok,
                             root / "teacher", seed=1)
    cat = Catalog.open(root / "cat")
    ingest_questions(cat, synthetic_vqa(questions, "train", seed=11), "questions")
    judge = make_judge("rule")
    reward = RewardConfig(judge_id=judge.judge_id)
    spec = IterationSpec(run_id="bench", iteration=0, teacher=str(teacher), student=str(student), mask_ratio=0.2,
                         teacher_responses=responses, student_responses=responses,
                         sampling=SamplingConfig(max_new_tokens=tokens))
    t0 = time.perf_counter()
    produce_iteration(cat, IterationScope.build(spec, judge, reward), progress=False)
    produce = time.perf_counter() - t0
    n = cat.count("responses")
    snap = create_snapshot(cat, "bench", reward.id, progress=False)
    cat.close()
    return student, snap.path, produce, n


def run_offline(student, snap, out, steps, batch) -> tuple[float, float]:
    run = build_trainer(GRPORunConfig(model=str(student), snapshot=str(snap), output_dir=str(out),
                                      max_steps=steps, batch_size=batch, learning_rate=1e-4,
                                      logging_steps=steps, progress=False))
    cls = counting(type(run.trainer))
    run.trainer.__class__ = cls
    timer = StepTimer()
    run.trainer.add_callback(timer)
    run.trainer.train()
    return steady(timer.times, 2), cls.tokens / steps


def run_sft(student, snap, out, steps, batch) -> tuple[float, float]:
    ds, _, _ = load_verified(snap)
    train = to_prompt_completion(ds, snap)
    model, processor = load_model_and_processor(student)
    args = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4,
                     lr_scheduler_type="constant", logging_steps=steps, report_to=[], save_strategy="no",
                     use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
                     max_length=None, disable_tqdm=True, completion_only_loss=True,
                     gradient_checkpointing=False, bf16=False)  # TRL defaults both on; the GRPO side runs without
    cls = counting(SFTTrainer)
    trainer = cls(model=model, args=args, train_dataset=train, processing_class=processor)
    trainer.remove_callback(PrinterCallback)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return steady(timer.times, 2), cls.tokens / steps


def run_online(student, snap, out, steps, batch, generations, tokens) -> float:
    import datasets

    ds, _, _ = load_verified(snap)
    rows = ds.select_columns(["prompt", "image", "answer"]).to_list()
    # the same prompt layout as Gen-Data (schemas/prompts.py)
    prompts = datasets.Dataset.from_list([{"prompt": user_message(r["prompt"]), "image": r["image"],
                                           "answer": r["answer"]} for r in rows]).cast_column("image", ds.features["image"])

    def accuracy(completions, answer, **_):
        return [float(match_answer(c[0]["content"] if isinstance(c, list) else c, a, "word", []))
                for c, a in zip(completions, answer)]

    _, processor = load_model_and_processor(student)
    # TRL's online VLM path re-runs the processor with its default padding over left-padded prompt ids
    processor.tokenizer.padding_side = "left"
    # the checkpoint's own generation rules (tiny random models must not sample image placeholders)
    suppress = GenerationConfig.from_pretrained(student).suppress_tokens or []
    args = GRPOConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                      num_generations=generations, max_completion_length=tokens, learning_rate=1e-4,
                      temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.05, beta=0.1,
                      logging_steps=steps, report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available(),
                      dataloader_num_workers=0, disable_tqdm=True, bf16=False, gradient_checkpointing=False,
                      model_init_kwargs={"dtype": torch.float32},
                      generation_kwargs={"suppress_tokens": suppress} if suppress else None)
    trainer = GRPOTrainer(model=str(student), reward_funcs=[accuracy], args=args, train_dataset=prompts,
                          processing_class=processor)
    trainer.remove_callback(PrinterCallback)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return steady(timer.times, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="qwen2_vl", choices=list(FAMILIES))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--responses", type=int, default=4, help="per source per question")
    ap.add_argument("--tokens", type=int, default=32, help="max completion tokens")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student, snap, produce, n = make_snapshot(root, a.family, a.hidden, a.layers, a.questions, a.responses,
                                                  a.tokens)
        sft_step, sft_tok = run_sft(student, snap, root / "sft", a.steps, a.batch)
        grpo_step, grpo_tok = run_offline(student, snap, root / "grpo", a.steps, a.batch)
        online_step = run_online(student, snap, root / "online", a.steps, a.batch, a.batch // 2, a.tokens)
    per_sample_off = grpo_step / a.batch
    per_sample_on = online_step / a.batch
    produce_per = produce / n
    print(f"model {a.family} hidden {a.hidden} x {a.layers} layers; {a.batch} completions per step, "
          f"<= {a.tokens} tokens; median of steps 3..{a.steps}; torch threads {torch.get_num_threads()}")
    print(f"{'':34}{'step s':>10}{'tokens/step':>13}{'tokens/s':>11}")
    print(f"{'TRL SFTTrainer (baseline)':34}{sft_step:10.4f}{sft_tok:13.1f}{sft_tok / sft_step:11.0f}")
    print(f"{'offline GRPO (ours)':34}{grpo_step:10.4f}{grpo_tok:13.1f}{grpo_tok / grpo_step:11.0f}")
    ratio = (grpo_step / grpo_tok) / (sft_step / sft_tok)
    print(f"offline GRPO time per token / SFT time per token: {ratio:.3f}x (goal <= 1.15x)")
    print(f"{'':34}{'s / trained sample':>20}")
    print(f"{'TRL online GRPOTrainer (baseline)':34}{per_sample_on:20.4f}")
    print(f"{'offline GRPO, training only':34}{per_sample_off:20.4f}")
    print(f"{'offline GRPO + Gen-Data production':34}{per_sample_off + produce_per:20.4f}"
          f"   (generate + score: {produce_per:.4f} s per response, {n} responses)")
    print(f"online / offline per trained sample: {per_sample_on / per_sample_off:.1f}x training only, "
          f"{per_sample_on / (per_sample_off + produce_per):.1f}x with Gen-Data production")


if __name__ == "__main__":
    main()
