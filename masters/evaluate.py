"""Held-out accuracy of a checkpoint: greedy answers to a question set, matched per answer type
(normalised exact / relaxed numeric / letter) against every accepted answer (any of them counts).
Overall and per question type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from gendata.hf_generate import generate, load_vlm
from gendata.questions import QuestionSet
from rewards.judges import Judge, JudgeItem
from rewards.matching import match_any


@dataclass
class EvalResult:
    accuracy: float
    per_type: dict[str, float]
    n: int
    examples: list[dict] = field(default_factory=list)


def accepted(question: dict) -> tuple[str, ...]:
    """A question row's accepted answers: ``answers``, or just ``answer`` in rows without them
    (older catalogs)."""
    return tuple(question.get("answers") or (question["answer"],))


def evaluate(checkpoint: str | Path, qs: QuestionSet, batch_size: int = 32, max_new_tokens: int = 8,
             progress: bool = False, model_and_processor=None, judge: Judge | None = None) -> EvalResult:
    """Greedy answers marked by ``judge`` (default: the rule matcher per answer type). A verdict
    that is not ``ok`` with score 1 counts as wrong."""
    model, processor = model_and_processor or load_vlm(checkpoint)
    images = {r["image_id"]: r["bytes"] for r in qs.images.to_pylist()}
    rows = qs.questions.to_pylist()
    hits: dict[str, list[bool]] = {}
    examples = []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"eval {Path(str(checkpoint)).name}",
                      disable=not progress):
        batch = rows[start:start + batch_size]
        answers = generate(model, processor, [r["question"] for r in batch],
                           [images[r["image_id"]] for r in batch], n=1, do_sample=False,
                           repetition_penalty=1.0, max_new_tokens=max_new_tokens, batch_size=batch_size)
        if judge is not None:
            verdicts = judge.judge([JudgeItem(r["question_id"], r["question"], r["answer"], r["answer_type"],
                                              s.text, tuple(r["choices"] or ()), answers=accepted(r))
                                    for r, (s,) in zip(batch, answers)])
            marks = [v.state == "ok" and v.score == 1 for v in verdicts]
        else:
            marks = [match_any(s.text, accepted(r), r["answer_type"], r["choices"]) for r, (s,) in zip(batch, answers)]
        for r, (sample,), ok in zip(batch, answers, marks):
            hits.setdefault(r["qtype"], []).append(ok)
            if len(examples) < 12:
                examples.append({"qtype": r["qtype"], "answer": r["answer"], "response": sample.text, "correct": ok})
    flat = [h for v in hits.values() for h in v]
    return EvalResult(accuracy=sum(flat) / max(1, len(flat)),
                      per_type={k: sum(v) / len(v) for k, v in sorted(hits.items())},
                      n=len(flat), examples=examples)
