"""Every Gen-Data stage in one declared shape (``masters.stages.base.Stage``), run by one runner
(``run_stage``), inline or as N shards (``Shard``; on Ray: ``masters.ray_launcher``).

The stages, by name (``stage(name)``): ``iteration`` (register the iteration), ``generate-teacher``,
``generate-student``, ``score``, ``judge``, ``rewards``, ``evaluate``. ``ITERATION_STAGES`` is the
order one iteration's Gen-Data is produced in."""

from masters.stages.base import Shard, Stage, StageResult, Unit, run_stage, shard_of
from masters.stages.evaluation import EVALUATE
from masters.stages.generation import GENERATE_STUDENT, GENERATE_TEACHER
from masters.stages.judging import JUDGE
from masters.stages.models import ModelCache
from masters.stages.registration import REGISTER
from masters.stages.rewarding import REWARD
from masters.stages.scope import EvalScope, IterationScope, IterationSpec, JudgeScope, RewardScope
from masters.stages.scoring import SCORE

STAGES: dict[str, Stage] = {s.name: s for s in (REGISTER, GENERATE_TEACHER, GENERATE_STUDENT, SCORE, JUDGE,
                                                REWARD, EVALUATE)}
ITERATION_STAGES = (REGISTER, GENERATE_TEACHER, GENERATE_STUDENT, SCORE, JUDGE, REWARD)


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def stage_scope(s: Stage, scope: IterationScope):
    """The scope an iteration stage works on: the iteration itself, or its judge / reward view."""
    if s is JUDGE:
        return scope.judging()
    if s is REWARD:
        return scope.rewarding()
    return scope


__all__ = ["EVALUATE", "GENERATE_STUDENT", "GENERATE_TEACHER", "ITERATION_STAGES", "JUDGE", "REGISTER", "REWARD",
           "SCORE", "STAGES", "EvalScope", "IterationScope", "IterationSpec", "JudgeScope", "ModelCache", "RewardScope",
           "Shard", "Stage", "StageResult", "Unit", "run_stage", "shard_of", "stage", "stage_scope"]
