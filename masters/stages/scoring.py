"""Stage ``score``: the teacher-forced pass of the iteration's scoring pair (masked teacher,
student) over every response, summarised per token into ``token_stats``. A unit is a question
group with responses not scored yet by that pair (in any encoding this version reads); both
models are loaded once for the stage (from the process's model cache: the same ones that
generated). An empty response (no token: ``queries.EMPTY``) has nothing to score: it is not a
unit, it is counted ('empty responses'), and the reward stage leaves it out of its group."""

from __future__ import annotations

import pyarrow as pa

from catalog import Catalog
from gendata.scoring import score_responses
from gendata.vocab import shared_vocab_size
from masters.stages import queries
from masters.stages.base import Stage, Unit, with_data
from masters.stages.generation import with_images
from masters.stages.scope import IterationScope
from schemas import ids
from schemas import token_codec as codec
from schemas.tables import IMAGES, RESPONSES, TOKEN_STATS


def todo(catalog: Catalog, scope: IterationScope) -> list[Unit]:
    spec, it = scope.spec, scope.iteration_id
    have = queries.scored_ids(catalog, it)
    groups: dict[str, list[str]] = {}
    for r in queries.iteration_responses(catalog, it, "response_id, question_id", non_empty=True).to_pylist():
        sids = [ids.token_stats_id(r["response_id"], scope.teacher_model_id, spec.mask_ratio,
                                   scope.student_model_id, spec.scoring.top_k, e) for e in codec.ENCODINGS]
        if not have.intersection(sids):  # scored in any encoding this version reads: done
            groups.setdefault(r["question_id"], []).append(r["response_id"])
    return [Unit(ids.group_id(it, qid), qid, {"question_id": qid, "response_ids": rids}, weight=len(rids))
            for qid, rids in groups.items()]


def left_out(catalog: Catalog, scope: IterationScope) -> dict[str, list[str]]:
    """The iteration's empty responses (by question), never scored."""
    return {"empty responses": queries.empty_response_questions(catalog, scope.iteration_id)}


def hydrate(catalog: Catalog, scope: IterationScope, units) -> list[Unit]:
    """The batch's responses (prompt, token ids) and images."""
    wanted = [r for u in units for r in u.data["response_ids"]]
    rows = queries.responses_by_id(catalog, wanted, "iteration_id, question_id, prompt, token_ids",
                                   [scope.iteration_id])
    units = with_images(catalog, scope, units)
    return with_data(units, lambda u: {"responses": [rows[r] for r in u.data["response_ids"]]})


class Scorer:
    def __init__(self, scope: IterationScope, models):
        spec = scope.spec
        self.scope = scope
        self.teacher, self.processor = models.get(spec.teacher, spec.teacher_placement)
        self.student, student_processor = models.get(spec.student, spec.student_placement)
        self.vocab = shared_vocab_size(self.teacher, self.student,
                                       min(len(self.processor.tokenizer), len(student_processor.tokenizer)))
        self.plan = models.mask_plan(spec.teacher, spec.mask_ratio, scope.mask_spec, spec.teacher_placement,
                                     scope.mask_ratios)

    def produce(self, units) -> dict:
        s, spec = self.scope, self.scope.spec
        responses = pa.Table.from_pylist([r for u in units for r in u.data["responses"]])
        images = {u.data["question_id"]: u.data["image"] for u in units}
        tables = list(score_responses(self.teacher, self.student, self.processor, responses, images,
                                      teacher_model_id=s.teacher_model_id, teacher_mask_ratio=spec.mask_ratio,
                                      student_model_id=s.student_model_id, plan=self.plan, config=spec.scoring,
                                      groups_per_batch=len(units) + 1, mask_spec=s.mask_spec, vocab=self.vocab))
        return {TOKEN_STATS.name: pa.concat_tables(tables) if tables else TOKEN_STATS.schema.empty_table()}

    def close(self) -> None:
        self.teacher = self.student = None


SCORE = Stage(name="score", reads=(RESPONSES.name, IMAGES.name, TOKEN_STATS.name), writes=(TOKEN_STATS.name,),
              todo=todo, open=Scorer, batch=lambda scope: scope.spec.groups_per_batch, fault="score",
              hydrate=hydrate, left_out=left_out)
