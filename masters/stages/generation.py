"""Stages ``generate-teacher`` and ``generate-student``: n sampled responses per question, by the
iteration's masked teacher or by its student. A unit is a question whose n response ids are not
all in the catalog yet (ids hash the iteration, question, source, model, mask ratio, sample
index, seed and sampling, not the text, so nothing is generated twice). Each question is sampled
with its own seed: its responses do not depend on which shard or batch it lands in."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from catalog import Catalog
from gendata.backends import TransformersBackend, backend, generate_responses
from masters.stages import queries
from masters.stages.base import Stage, Unit, with_data
from masters.stages.scope import IterationScope
from schemas import ids
from schemas.errors import MastersError
from schemas.tables import IMAGES, QUESTIONS, RESPONSES


def _side(scope: IterationScope, source: str) -> tuple[str, str, float, int]:
    """(folder, model id, mask ratio, responses per question) of one source."""
    spec = scope.spec
    if source == "teacher":
        return spec.teacher, scope.teacher_model_id, spec.mask_ratio, spec.teacher_responses
    return spec.student, scope.student_model_id, 0.0, spec.student_responses


def placement(scope: IterationScope, source: str):
    return scope.spec.teacher_placement if source == "teacher" else scope.spec.student_placement


def questions(catalog: Catalog, split: str) -> pa.Table:
    """question_id, question of the split (those with an image); an error when there are none."""
    table = queries.question_texts(catalog, split)
    if table.num_rows == 0:
        raise MastersError(f"the catalog has no {split!r} questions with images: add some with "
                           "`masters questions synthetic` or `masters questions hf`")
    return table


def _todo(source: str):
    def todo(catalog: Catalog, scope: IterationScope) -> list[Unit]:
        _, model_id, ratio, n = _side(scope, source)
        if n == 0:
            return []
        spec, it = scope.spec, scope.iteration_id
        have = queries.response_ids(catalog, it, source)
        table = questions(catalog, spec.split)
        params = spec.sampling.model_dump()
        units = []
        for q in table.to_pylist():
            rids = [ids.response_id(it, q["question_id"], source, model_id, ratio, k, spec.seed, params)
                    for k in range(n)]
            if not all(r in have for r in rids):
                units.append(Unit(q["question_id"], q["question_id"],
                                  {"question_id": q["question_id"], "question": q["question"]}))
        return units
    return todo


def with_images(catalog: Catalog, scope, units) -> list[Unit]:
    """The batch's units with their question's image bytes (``data["image"]``)."""
    images = queries.question_images(catalog, [u.data["question_id"] for u in units])
    return with_data(units, lambda u: {"image": images[u.data["question_id"]]})


class Generator:
    """One generation engine for the stage, loaded once (the transformers backend takes the model
    from the process's model cache, shared with scoring)."""

    def __init__(self, scope: IterationScope, models, source: str):
        self.scope, self.source = scope, source
        folder, self.model_id, self.ratio, self.n = _side(scope, source)
        spec, where = scope.spec, placement(scope, source)
        if spec.backend == "transformers":
            self.engine = TransformersBackend(folder, mask_ratio=self.ratio, mask_spec=scope.mask_spec,
                                              loaded=models.get(folder, where),
                                              plan=models.mask_plan(folder, self.ratio, scope.mask_spec, where,
                                                                    scope.mask_ratios))
        else:
            try:
                plan = models.checkpoint_plan(folder, self.ratio, scope.mask_spec, scope.mask_ratios)
                options = spec.vllm.engine_kwargs() if spec.backend == "vllm" else {}
                self.engine = backend(spec.backend, str(Path(folder)), mask_ratio=self.ratio, mask_spec=scope.mask_spec,
                                      placement=where, plan=plan, **options)
            except ValueError as exc:
                raise MastersError(f"backend: {exc}") from None

    def produce(self, units) -> dict:
        spec = self.scope.spec
        qs = pa.table({"question_id": [u.data["question_id"] for u in units],
                       "question": [u.data["question"] for u in units]})
        images = {u.data["question_id"]: u.data["image"] for u in units}
        tables = list(generate_responses(self.engine, qs, images, iteration_id=self.scope.iteration_id,
                                         source=self.source, model_id=self.model_id, mask_ratio=self.ratio,
                                         n=self.n, seed=spec.seed, sampling=spec.sampling,
                                         questions_per_batch=len(units)))
        return {RESPONSES.name: pa.concat_tables(tables) if tables else RESPONSES.schema.empty_table()}

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()
        self.engine = None


def _stage(source: str) -> Stage:
    return Stage(name=f"generate-{source}", reads=(QUESTIONS.name, IMAGES.name, RESPONSES.name),
                 writes=(RESPONSES.name,), todo=_todo(source),
                 open=lambda scope, models: Generator(scope, models, source),
                 batch=lambda scope: scope.spec.questions_per_batch, fault="generate", hydrate=with_images)


GENERATE_TEACHER = _stage("teacher")
GENERATE_STUDENT = _stage("student")
