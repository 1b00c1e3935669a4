"""Stage ``judge``: a verdict of the scope's judge for every response that has no final one
(ok / unparseable) yet; error verdicts are retried as new attempts. A unit is a response, keyed
by its question (so the shard that generated a group judges it)."""

from __future__ import annotations

from typing import Any

from catalog import Catalog
from masters.stages import queries
from masters.stages.base import Stage, Unit, with_data
from masters.stages.scope import JudgeScope
from rewards import judges
from rewards.judges import Judge, JudgeItem, verdict_rows
from schemas.tables import QUESTIONS, RESPONSES, VERDICTS


def build_judge(cfg) -> Judge:
    """A judge from a run config's ``judge`` section (kind + params, validated with the config);
    errors name ``judge.params`` (rewards.judges.build_judge)."""
    return judges.build_judge(cfg.kind, cfg.params, where="judge.params")


def as_judge(judge: Any) -> Judge:
    """A Judge as it is, or one built from a JudgeConfig (where the stage runs)."""
    return judge if hasattr(judge, "judge_id") else build_judge(judge)


def todo(catalog: Catalog, scope: JudgeScope) -> list[Unit]:
    judge = as_judge(scope.judge)
    return [Unit(r["response_id"], r["question_id"], r)
            for r in queries.unjudged(catalog, judge.judge_id, scope.iteration, scope.run_id)]


def hydrate(catalog: Catalog, scope: JudgeScope, units) -> list[Unit]:
    """The batch's questions, ground truths and response texts."""
    inputs = queries.judge_inputs(catalog, [u.id for u in units], sorted({u.data["iteration_id"] for u in units}))
    return with_data(units, lambda u: inputs[u.id])


class Judging:
    def __init__(self, scope: JudgeScope, models=None):
        self.judge = as_judge(scope.judge)

    def produce(self, units) -> dict:
        rows = [u.data for u in units]
        items = [JudgeItem(r["response_id"], r["question"], r["answer"], r["answer_type"], r["text"],
                           tuple(r["choices"] or ()), r["iteration_id"], answers=tuple(r.get("answers") or ()))
                 for r in rows]
        attempts = {r["response_id"]: r["attempt"] for r in rows if r["attempt"]}
        return {VERDICTS.name: verdict_rows(self.judge, items, self.judge.judge(items), attempts)}

    def close(self) -> None:
        pass


JUDGE = Stage(name="judge", reads=(RESPONSES.name, QUESTIONS.name, VERDICTS.name), writes=(VERDICTS.name,),
              todo=todo, open=Judging, batch=lambda scope: scope.batch_size, fault="judge", hydrate=hydrate,
              count_by=(VERDICTS.name, "state"))
