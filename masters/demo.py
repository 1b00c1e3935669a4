"""`masters demo`: the embedded default end to end on a 2-core CPU. The tiny ladder (built once,
then cached), the built-in synthetic visual QA, the rule-based judge, teachers M then L under the
paper's mask schedule, offline GRPO each iteration; then an accuracy table and the HTML report."""

from __future__ import annotations

from masters.run_config import RunConfig

DEMO = {
    "run_id": "demo",
    "iterations": 5,
    "seed": 0,
    # the ladder's own held-out set (300 test questions, seed 0), so the teachers' accuracies compare
    "questions": {"source": "synthetic", "train": 96, "test": 300, "seed": 0, "image_size": 112},
    "student": "ladder:student",
    "teachers": [{"model": "ladder:M", "start": 0}, {"model": "ladder:L", "start": 2}],
    "teacher_responses": 4,
    "student_responses": 4,
    "sampling": {"max_new_tokens": 12},
    "judge": {"kind": "rule"},
    "train": {"num_epochs": 2, "batch_size": 16, "learning_rate": 3e-4, "beta": 0.1, "jsd_weight": 1.0},
}


def demo_config(**overrides) -> RunConfig:
    doc = {**DEMO, **{k: v for k, v in overrides.items() if v is not None}}
    return RunConfig.parse(doc, where="demo")
