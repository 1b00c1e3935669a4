"""`masters demo`: the embedded default end to end on a 2-core CPU. The tiny ladder (built once,
then cached), the built-in synthetic visual QA, the rule-based judge, teachers M then L under the
paper's mask schedule, offline GRPO each iteration; then an accuracy table (with the student's
ceiling beside the teachers) and the HTML report."""

from __future__ import annotations

from masters.run_config import RunConfig

DEMO = {
    "run_id": "demo",
    "iterations": 5,
    "seed": 0,
    # the ladder's own held-out set (600 test questions, seed 0), so the teachers' accuracies compare;
    # 600 validation questions carved from train, on which these settings were chosen
    "questions": {"source": "synthetic", "train": 200, "test": 600, "validation": 600, "seed": 0,
                  "image_size": 112},
    "student": "ladder:student",
    "teachers": [{"model": "ladder:M", "start": 0}, {"model": "ladder:L", "start": 2}],
    "teacher_responses": 4,
    "student_responses": 4,
    "sampling": {"max_new_tokens": 12},
    "judge": {"kind": "rule"},
    "eval": {"references": ["ladder:ceiling"]},
    # chosen on the validation split (eval.split: validation; README "The demo"): eight passes
    # over each iteration's rows, the JSD term at twice the policy term's weight
    "train": {"num_epochs": 8, "batch_size": 16, "learning_rate": 1e-3, "beta": 0.1, "jsd_weight": 2.0},
}


def demo_config(**overrides) -> RunConfig:
    doc = {**DEMO, **{k: v for k, v in overrides.items() if v is not None}}
    return RunConfig.parse(doc, where="demo")
