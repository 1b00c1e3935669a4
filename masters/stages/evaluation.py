"""Stage ``evaluate``: held-out accuracy of checkpoints, one ``evaluations`` row per checkpoint,
run and iteration. A checkpoint already measured on the same questions, judge and decoding is
not run again: its measurement is recorded under the new run id. A unit is a checkpoint, keyed
by its model id (shards evaluate different checkpoints)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from catalog import Catalog
from masters.evaluate import evaluate
from masters.stages import queries
from masters.stages.base import Stage, Unit
from masters.stages.judging import as_judge
from masters.stages.scope import EvalScope
from schemas import ids
from schemas.tables import EVALUATIONS, QUESTIONS


def questions_hash(scope: EvalScope) -> str:
    key = "\n".join(sorted(scope.questions.questions.column("question_id").to_pylist())) + f"|{scope.max_new_tokens}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def evaluation_id(scope: EvalScope, model_id: str, judge_id: str) -> str:
    return ids.content_id("evaluation", model_id=model_id, split=scope.split, judge_id=judge_id,
                          questions=questions_hash(scope), run_id=scope.run_id, iteration=scope.iteration)


def todo(catalog: Catalog, scope: EvalScope) -> list[Unit]:
    judge_id = as_judge(scope.judge).judge_id
    qhash = questions_hash(scope)
    wanted = {}
    for folder in scope.checkpoints:
        model_id = ids.checkpoint_id(Path(folder))
        wanted[evaluation_id(scope, model_id, judge_id)] = (folder, model_id)
    have = queries.evaluation_ids_present(catalog, list(wanted))
    units = []
    for eid, (folder, model_id) in wanted.items():
        if eid in have:
            continue
        found = queries.evaluations_of(catalog, model_id, scope.split, judge_id, qhash)
        units.append(Unit(eid, model_id, {"folder": folder, "model_id": model_id, "questions_hash": qhash,
                                          "measured": found[0] if found else None}))
    return units


class Evaluator:
    def __init__(self, scope: EvalScope, models):
        self.scope, self.models = scope, models
        self.judge = as_judge(scope.judge)

    def produce(self, units) -> dict:
        s, rows = self.scope, []
        for u in units:
            d = u.data
            if d["measured"]:
                m = d["measured"]
                res = {"accuracy": m["accuracy"], "per_type": m["per_type"], "n": m["n"]}
            else:
                r = evaluate(d["folder"], s.questions, max_new_tokens=s.max_new_tokens, judge=self.judge,
                             model_and_processor=self.models.get(d["folder"], s.placement(d["folder"])))
                res = {"accuracy": r.accuracy, "per_type": json.dumps(r.per_type), "n": r.n}
            rows.append({"evaluation_id": u.id, "model_id": d["model_id"], "split": s.split,
                         "judge_id": self.judge.judge_id, "questions_hash": d["questions_hash"], "n": res["n"],
                         "accuracy": res["accuracy"], "per_type": res["per_type"], "run_id": s.run_id,
                         "iteration": s.iteration, "created_at": datetime.now(timezone.utc)})
        return {EVALUATIONS.name: EVALUATIONS.rows(rows)}

    def close(self) -> None:
        pass


def result_of(catalog: Catalog, scope: EvalScope, folder: str | Path) -> dict:
    """The recorded accuracy of a checkpoint in this scope: accuracy, per_type, n."""
    model_id = ids.checkpoint_id(Path(folder))
    found = queries.evaluations_of(catalog, model_id, scope.split, as_judge(scope.judge).judge_id,
                                   questions_hash(scope))
    if not found:
        raise LookupError(f"no evaluation of {folder} recorded")
    return {"accuracy": found[0]["accuracy"], "per_type": json.loads(found[0]["per_type"]), "n": found[0]["n"]}


EVALUATE = Stage(name="evaluate", reads=(QUESTIONS.name, EVALUATIONS.name), writes=(EVALUATIONS.name,),
                 todo=todo, open=Evaluator, batch=lambda scope: 1, fault="evaluate")
