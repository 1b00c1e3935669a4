"""Judges: one protocol, a registry by name. A judge turns (question, ground truth, response) items
into verdicts; a verdict is ok / unparseable / error, never a silent 0.

Rule-based judges here; the LLM-as-a-judge is rewards/llm_judge.py (kind ``llm``, registered when
that module is imported):

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import pyarrow as pa
from pydantic import Field

from rewards import matching
from schemas import ids
from schemas.config import StrictModel
from schemas.registry import NoParams, Registry
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
    answers: tuple[str, ...] = ()  # every accepted answer (``answer`` is the first); empty: just ``answer``

    @property
    def accepted(self) -> tuple[str, ...]:
        """The accepted answers: any of them counts."""
        return self.answers or (self.answer,)


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
                ok = any(self.match(extracted, item if a == item.answer else replace(item, answer=a))
                         for a in item.accepted)
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


class NumericParams(StrictModel):
    tolerance: float = Field(0.05, ge=0, allow_inf_nan=False,
                             description="relative tolerance: |pred - gt| <= tolerance * |gt|")


# name -> (params config class, factory(params) -> Judge). A judge of its own module registers
# itself there (rewards/llm_judge.py) and is imported at the end of this one.
JUDGES: Registry[Judge] = Registry("judge")
JUDGES.register("rule", NoParams, lambda p: RuleJudge("rule", _by_type, lambda x, i: matching.match_answer(
    x, i.answer, i.answer_type, list(i.choices))))
JUDGES.register("exact", NoParams, lambda p: RuleJudge("exact", _text, lambda x, i: matching.exact_match(x, i.answer)))
JUDGES.register("numeric", NumericParams, lambda p: RuleJudge(
    "numeric", _number, lambda x, i: matching.relaxed_numeric_match(x, i.answer, p.tolerance), p.model_dump()))
JUDGES.register("choice", NoParams, lambda p: RuleJudge("choice", _letter, lambda x, i: x == i.answer.strip().upper()))


def build_judge(kind: str, params: Mapping[str, Any] | StrictModel | None = None,
                where: str = "judge.params") -> Judge:
    """The judge ``kind`` (UnknownKindError listing the known ones) with ``params`` (a mapping, or
    the judge's params config) validated by its params class: a ConfigError names ``where`` (the
    parameters' config key or option, e.g. 'judge.params', '--judge-config') and each bad key.
    Building may raise MissingExtraError (an optional package the judge needs is not installed)
    or a ConfigError of the judge's own (the LLM judge: its API key variable is not set)."""
    return JUDGES.build(kind, params, where=where)


def make_judge(name: str, config: StrictModel | None = None, **params) -> Judge:
    """The judge ``name`` with its parameters as keywords (``make_judge("numeric", tolerance=0.1)``)
    or as its params config (``make_judge("llm", config=LLMJudgeConfig(...))``); see build_judge."""
    return build_judge(name, config if config is not None else params, where=f"judge {name!r} parameters")


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


importlib.import_module("rewards.llm_judge")  # registers "llm" (openai is imported only when one is built)
