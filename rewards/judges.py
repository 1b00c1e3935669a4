"""Judges: one protocol, a registry by name. A judge turns (question, ground truth, response) items
into verdicts; a verdict is ok / unparseable / error, never a silent 0.

Rule-based judges here (issue 5 adds the LLM-as-a-judge client):

- ``exact``: normalised exact match;
- ``numeric``: ChartQA's relaxed accuracy (|pred - gt| <= 5% of |gt|, '%' handled, exact match
  when gt is 0 or not numeric);
- ``choice``: the option letter read out of free text (or the option named);
- ``rule``: dispatch by the question's answer type (word -> exact, number -> numeric,
  letter -> choice).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import pyarrow as pa

from rewards import matching
from schemas import ids
from schemas.tables import VERDICTS

RULE_VERSION = "rules/1"


@dataclass(frozen=True)
class JudgeItem:
    response_id: str
    question: str
    answer: str
    answer_type: str
    response: str
    choices: tuple[str, ...] = ()
    iteration_id: str | None = None  # the response's iteration: needed for verdict rows


@dataclass
class Verdict:
    score: float | None
    state: str  # ok / unparseable / error
    extracted_answer: str | None = None
    raw_output: str | None = None
    latency_s: float = 0.0
    error: str | None = None


class Judge(Protocol):
    kind: str

    @property
    def judge_id(self) -> str: ...

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...


@dataclass
class RuleJudge:
    """A rule-based judge: ``extract`` reads the answer out of a response (None: unparseable)
    and ``match`` compares it with the ground truth."""

    kind: str
    extract: Callable[[JudgeItem], str | None]
    match: Callable[[str, JudgeItem], bool]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def judge_id(self) -> str:
        return ids.judge_id(self.kind, None, RULE_VERSION, self.params)

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        out = []
        for item in items:
            t0 = time.perf_counter()
            try:
                extracted = self.extract(item)
                if extracted is None:
                    out.append(Verdict(None, "unparseable", None, item.response,
                                       time.perf_counter() - t0, "no answer found in the response"))
                    continue
                ok = self.match(extracted, item)
                out.append(Verdict(float(ok), "ok", extracted, None, time.perf_counter() - t0))
            except Exception as exc:  # a judge bug must show up as an error, not as a 0
                out.append(Verdict(None, "error", None, item.response, time.perf_counter() - t0,
                                   f"{type(exc).__name__}: {exc}"))
        return out


def _text(item: JudgeItem) -> str | None:
    return item.response.strip() or None


def _number(item: JudgeItem) -> str | None:
    found = matching.find_number(item.response)
    if found is None:
        return _text(item) if matching.parse_number(item.answer) is None else None
    return found


def _letter(item: JudgeItem) -> str | None:
    return matching.extract_choice(item.response, item.choices)


def _by_type(item: JudgeItem) -> str | None:
    return {"number": _number, "letter": _letter}.get(item.answer_type, _text)(item)


JUDGES: dict[str, Callable[..., Judge]] = {
    "exact": lambda: RuleJudge("exact", _text, lambda x, i: matching.exact_match(x, i.answer)),
    "numeric": lambda tolerance=0.05: RuleJudge(
        "numeric", _number, lambda x, i: matching.relaxed_numeric_match(x, i.answer, tolerance),
        {"tolerance": tolerance}),
    "choice": lambda: RuleJudge("choice", _letter, lambda x, i: x == i.answer.strip().upper()),
    "rule": lambda: RuleJudge("rule", _by_type, lambda x, i: matching.match_answer(
        x, i.answer, i.answer_type, list(i.choices))),
}


def make_judge(name: str, **params) -> Judge:
    if name == "llm" and name not in JUDGES:
        importlib.import_module("rewards.llm_judge")  # registers itself
    try:
        factory = JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}") from None
    return factory(**params)


def verdict_rows(judge: Judge, items: Sequence[JudgeItem], verdicts: Sequence[Verdict],
                 attempts: dict[str, int] | None = None) -> pa.Table:
    """Verdict rows; ``attempts`` maps a response to its number of earlier error verdicts."""
    now = datetime.now(timezone.utc)
    jid = judge.judge_id
    attempts = attempts or {}
    return pa.Table.from_pylist([
        {"verdict_id": ids.verdict_id(i.response_id, jid, attempts.get(i.response_id, 0)),
         "response_id": i.response_id, "iteration_id": i.iteration_id,
         "judge_id": jid, "judge_kind": judge.kind, "score": v.score,
         "extracted_answer": v.extracted_answer, "raw_output": v.raw_output,
         "latency_s": v.latency_s, "state": v.state, "error": v.error, "created_at": now}
        for i, v in zip(items, verdicts)], schema=VERDICTS.schema)
