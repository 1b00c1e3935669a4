"""A run's plan, derived once from its ``RunConfig``: the judge and reward config, where students
go, and per iteration the teacher, mask ratio, sampling seed, training seed, snapshot name and
the trained student's folder. The loop (``masters.loop``), the ablation (``masters.ablate``) and
shard workers (``masters worker``) all read it instead of rebuilding these values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gendata.placement import DEFAULT, Placement
from gendata.questions import QuestionSet
from masters.run_config import RunConfig
from masters.stages import EvalScope, IterationScope, IterationSpec
from masters.stages import queries
from masters.stages.judging import build_judge
from rewards.judges import Judge
from schemas.config import CatalogConfig, RewardConfig
from schemas.errors import ConfigError, MastersError

LADDER_PREFIX = "ladder:"


def resolve_model(ref: str, progress: bool = True) -> Path:
    """A checkpoint folder from a config reference (a folder, ladder:<member> of the default tiny
    ladder, or ladder:<name>/<member> of a named one)."""
    if ref.startswith(LADDER_PREFIX):
        from masters.fixtures import resolve_ladder_ref

        return resolve_ladder_ref(ref[len(LADDER_PREFIX):], progress)
    path = Path(ref).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{ref}: not a checkpoint folder (no config.json)")
    return path


def run_dir(config: RunConfig, catalog_config: CatalogConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir)
    return Path(catalog_config.snapshot_root).expanduser().parent / "runs" / config.run_id


def student_path(out: Path, iteration: int) -> Path:
    """Where the student trained in iteration ``iteration - 1`` lives."""
    return out / "students" / f"iter{iteration}"


@dataclass(frozen=True)
class IterationPlan:
    index: int
    teacher_ref: str  # as the config names it (ladder:M, a folder)
    teacher: Path
    mask_ratio: float
    sampling_seed: int
    train_seed: int
    snapshot: str
    trained: Path  # where this iteration's trained student goes
    teacher_placement: Placement = DEFAULT


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    out: Path
    judge: Judge
    reward: RewardConfig
    start_student: Path
    iterations: tuple[IterationPlan, ...]
    references: tuple[Path, ...] = ()

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def teachers(self) -> tuple[Path, ...]:
        """The ladder's distinct teacher folders, in order."""
        return tuple(dict.fromkeys(p.teacher for p in self.iterations))

    @classmethod
    def build(cls, config: RunConfig, catalog_config: CatalogConfig, progress: bool = True) -> "RunPlan":
        judge = build_judge(config.judge)
        out = run_dir(config, catalog_config)
        folders = {t.model: resolve_model(t.model, progress) for t in config.teachers}
        its = tuple(IterationPlan(
            index=i, teacher_ref=config.teacher_for(i), teacher=folders[config.teacher_for(i)],
            mask_ratio=config.schedule.ratio(i), sampling_seed=config.seed + 1000 * i, train_seed=config.seed + i,
            snapshot=f"{config.run_id}-iter{i}", trained=student_path(out, i + 1),
            teacher_placement=config.stage_for(i).placement) for i in range(config.iterations))
        return cls(config, out, judge, RewardConfig(judge_id=judge.judge_id, **config.reward.model_dump()),
                   resolve_model(config.student.model, progress), its,
                   tuple(resolve_model(r, progress) for r in config.eval.references))

    def placement_of(self, folder: str | Path) -> Placement:
        """How a checkpoint of this run is loaded: a teacher of the ladder as its stage says,
        anything else (the students) as the student entry says."""
        for p in self.iterations:
            if Path(folder) == p.teacher:
                return p.teacher_placement
        return self.config.student.placement

    def student_for(self, i: int) -> Path:
        """The student generating in iteration ``i`` (trained by iteration i - 1)."""
        return self.start_student if i == 0 else self.iterations[i - 1].trained

    def spec(self, i: int, student: Path | None = None, teacher: Path | None = None,
             mask_ratio: float | None = None, teacher_only: bool = False) -> IterationSpec:
        """Iteration ``i``'s Gen-Data spec; ``teacher_only`` gives the teacher all the responses
        of a group (the SFT arms' data)."""
        p, c = self.iterations[i], self.config
        return IterationSpec(
            run_id=c.run_id, iteration=i, teacher=str(teacher or p.teacher), student=str(student or self.student_for(i)),
            mask_ratio=p.mask_ratio if mask_ratio is None else mask_ratio,
            teacher_responses=c.teacher_responses + (c.student_responses if teacher_only else 0),
            student_responses=0 if teacher_only else c.student_responses, seed=p.sampling_seed,
            backend=c.backend, vllm=c.vllm, sampling=c.sampling, scoring=c.scoring,
            teacher_placement=self.placement_of(teacher or p.teacher), student_placement=c.student.placement)

    def scope(self, i: int, **spec_args) -> IterationScope:
        spec = self.spec(i, **spec_args)
        for what, folder in (("teacher", spec.teacher), ("student", spec.student)):
            if not (Path(folder) / "config.json").is_file():
                raise MastersError(f"iteration {i}'s {what} {folder} does not exist yet"
                                   + (": the previous iteration's training makes it (`masters run` does)"
                                      if what == "student" and i > 0 else ""))
        ratios = tuple(sorted({p.mask_ratio for p in self.iterations if str(p.teacher) == spec.teacher and p.mask_ratio > 0}))
        return IterationScope.build(spec, self.config.judge, self.reward, mask_ratios=ratios)

    def eval_scope(self, catalog, checkpoints, iteration: int | None) -> EvalScope:
        e = self.config.eval
        qs, images = queries.split_questions(catalog, e.split, e.limit)
        placements = tuple((str(c), p) for c in checkpoints if (p := self.placement_of(c)) != DEFAULT)
        return EvalScope(tuple(str(c) for c in checkpoints), QuestionSet(qs, images), e.split, self.config.judge,
                         e.max_new_tokens, self.run_id, iteration, placements)
