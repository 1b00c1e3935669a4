"""Producing Gen-Data: a launcher runs a stage over its todo, in this process (``inline``,
optionally as one shard of N) or fanned out as N shards on Ray (``masters.ray_launcher``);
``produce_iteration`` runs one iteration's stages in order (register, generate teacher and
student, score, judge, reward). Every stage asks the catalog what is left, so a killed run
resumes where it stopped and a finished one is a no-op."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from catalog import Catalog
from masters import faults
from masters.stages import (ITERATION_STAGES, JUDGE, REGISTER, IterationScope, ModelCache, Shard, Stage,
                            StageResult, run_stage, stage_scope)


class Launcher(Protocol):
    def run(self, stage: Stage, catalog: Catalog, scope) -> StageResult: ...

    def release(self) -> None:
        """Drop the models kept loaded (before training needs the memory)."""
        ...

    def close(self) -> None: ...


class InlineLauncher:
    """Stages in this process, with models kept loaded across them (``ModelCache``)."""

    def __init__(self, shard: Shard | None = None, progress: bool = False, threads: int | None = None):
        self.shard, self.progress, self.models = shard, progress, ModelCache()
        if threads:
            import torch

            torch.set_num_threads(threads)

    def run(self, stage: Stage, catalog: Catalog, scope) -> StageResult:
        return run_stage(stage, catalog, scope, self.shard, models=self.models, progress=self.progress)

    def release(self) -> None:
        self.models.clear()

    def close(self) -> None:
        self.models.clear()


def make_launcher(production, progress: bool = False) -> Launcher:
    """The launcher a run config's ``production`` section asks for."""
    if production.launcher == "ray":
        from masters.ray_launcher import RayLauncher

        return RayLauncher(production, progress=progress)
    return InlineLauncher(progress=progress, threads=production.threads_per_shard)


@dataclass
class IterationResult:
    iteration_id: str
    teacher_model_id: str
    student_model_id: str
    added: dict[str, int] = field(default_factory=dict)  # rows added per table in this call
    stages: dict[str, StageResult] = field(default_factory=dict)


def produce_iteration(catalog: Catalog, scope: IterationScope, launcher: Launcher | None = None, *,
                      progress: bool = False) -> IterationResult:
    """Run the iteration's Gen-Data stages in order; each commits as it goes and skips what exists.
    The models are released at the end (training comes next)."""
    own = launcher is None
    launcher = launcher or InlineLauncher(progress=progress)
    result = IterationResult(scope.iteration_id, scope.teacher_model_id, scope.student_model_id)
    try:
        for s in ITERATION_STAGES:
            res = launcher.run(s, catalog, stage_scope(s, scope))
            result.stages[s.name] = res
            if s is not REGISTER:  # the rows this iteration made, not its bookkeeping
                for table in s.writes:
                    result.added[table] = result.added.get(table, 0) + res.added.get(table, 0)
            if s is JUDGE:
                faults.point("judged")
    finally:
        launcher.release()
        if own:
            launcher.close()
    return result
