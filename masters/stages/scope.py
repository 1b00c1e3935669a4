"""What a stage works on: an iteration of a run (generation, scoring, registration), a judge over
some responses, a reward config over some groups, or checkpoints to evaluate. Scopes are frozen
and picklable: they travel to shard workers as they are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from gendata.backends import SamplingConfig, VLLMOptions
from gendata.masking import MaskSpec
from gendata.placement import Placement
from gendata.questions import QuestionSet
from gendata.scoring import ScoringConfig
from schemas import ids
from schemas.config import RewardConfig, StrictModel


class IterationSpec(StrictModel):
    """What one iteration generates and how."""

    run_id: str = Field(description="the run the iteration belongs to")
    iteration: int = Field(ge=0, description="0-based iteration index")
    teacher: str = Field(description="teacher checkpoint folder (unmasked)")
    student: str = Field(description="student checkpoint folder (the one generating and being trained)")
    mask_ratio: float = Field(ge=0, lt=1, description="the teacher's mask ratio r_i")
    teacher_responses: int = Field(4, ge=0, description="responses per question from the masked teacher")
    student_responses: int = Field(4, ge=0, description="responses per question from the student")
    seed: int = Field(0, description="sampling seed (each question derives its own)")
    split: str = Field("train", description="which questions of the catalog to generate for")
    backend: str = Field("transformers", description="generation backend (transformers / vllm)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="sampling parameters")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="teacher-forced scoring")
    questions_per_batch: int = Field(16, gt=0, description="questions per generation commit")
    groups_per_batch: int = Field(8, gt=0, description="question groups per scoring commit")
    vllm: VLLMOptions = Field(default_factory=VLLMOptions, description="vLLM engine settings (backend: vllm)")
    teacher_placement: Placement = Field(default_factory=Placement, description="the teacher's dtype and placement")
    student_placement: Placement = Field(default_factory=Placement, description="the student's dtype and placement")

    def config_hash(self) -> str:
        """What makes the iteration's rows: batch sizes, engine settings and device placement do
        not; a dtype set explicitly does (bf16 and fp32 sample differently). The teacher and the
        student count by what they are (``model_identity``: the hash of their weights), not by
        where they lie: the same run from another folder or machine has the same hash."""
        return self._config_hash(model_identity)

    def legacy_config_hash(self) -> str:
        """The hash iterations recorded before ``config_hash`` counted models by content: the
        checkpoint folders' paths as given (so that a catalog written then can still be resumed)."""
        return self._config_hash(str)

    def same_config(self, recorded: str) -> bool:
        """Whether an iteration row's ``config_hash`` is this configuration's (either form)."""
        return recorded in (self.config_hash(), self.legacy_config_hash())

    def _config_hash(self, identity) -> str:
        spec = self.model_dump(mode="json", exclude={"questions_per_batch", "groups_per_batch", "vllm",
                                                     "teacher_placement", "student_placement"})
        for side in ("teacher", "student"):
            spec[side] = identity(spec[side])
            dtype = getattr(self, f"{side}_placement").dtype
            if dtype is not None:
                spec[f"{side}_dtype"] = dtype
        return ids.content_id("iteration-config", spec=spec)


_CHECKPOINT_IDS: dict[tuple, str] = {}


def checkpoint_id(folder: str | Path) -> str:
    """``schemas.ids.checkpoint_id`` (the hash of a checkpoint's weight files), cached per folder
    while its files keep their sizes and times: hashing the weights reads them whole."""
    folder = Path(folder)
    files = tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.iterdir() if p.is_file()
                         for st in [p.stat()])) if folder.is_dir() else ()
    key = (str(folder.resolve()), files)
    if key not in _CHECKPOINT_IDS:
        _CHECKPOINT_IDS[key] = ids.checkpoint_id(folder)
    return _CHECKPOINT_IDS[key]


def model_identity(model: str) -> str:
    """What a checkpoint is, wherever it lies: its ``checkpoint_id`` (the models table's
    ``model_id``) for a folder with weights; the hash of its config.json for a folder without
    (a stub); the name as given otherwise (a Hub id)."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    try:
        return checkpoint_id(folder)
    except FileNotFoundError:  # no weight files
        config = folder / "config.json"
        return ids.content_id("checkpoint-config", config=config.read_text() if config.is_file() else "")


@dataclass(frozen=True)
class JudgeScope:
    """A judge over the responses of one iteration of one run (or of the whole catalog)."""

    judge: Any  # a rewards.judges.Judge, or a run config's JudgeConfig (built where it runs)
    iteration: int | None = None
    run_id: str | None = None
    batch_size: int = 2048


@dataclass(frozen=True)
class RewardScope:
    """A reward config over the groups of one iteration of one run (or of the whole catalog)."""

    config: RewardConfig
    iteration: int | None = None
    run_id: str | None = None
    groups_per_batch: int = 256


@dataclass(frozen=True)
class IterationScope:
    """One iteration of a run: every stage from registration to rewards."""

    spec: IterationSpec
    judge: Any  # Judge or JudgeConfig
    reward: RewardConfig
    teacher_model_id: str
    student_model_id: str
    mask_spec: MaskSpec | None = None
    mask_ratios: tuple[float, ...] = ()  # every ratio the run masks this teacher at: one threshold pass for all

    @classmethod
    def build(cls, spec: IterationSpec, judge: Any, reward: RewardConfig,
              mask_spec: MaskSpec | None = None, mask_ratios: tuple[float, ...] = ()) -> "IterationScope":
        return cls(spec, judge, reward, checkpoint_id(spec.teacher), checkpoint_id(spec.student),
                   mask_spec, tuple(mask_ratios))

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def iteration(self) -> int:
        return self.spec.iteration

    @property
    def iteration_id(self) -> str:
        return ids.iteration_id(self.spec.run_id, self.spec.iteration)

    def judging(self) -> JudgeScope:
        return JudgeScope(self.judge, self.spec.iteration, self.spec.run_id)

    def rewarding(self) -> RewardScope:
        return RewardScope(self.reward, self.spec.iteration, self.spec.run_id)


@dataclass(frozen=True)
class EvalScope:
    """Checkpoints to evaluate on a question set, recorded under a run and iteration."""

    checkpoints: tuple[str, ...]
    questions: QuestionSet
    split: str
    judge: Any  # Judge or JudgeConfig
    max_new_tokens: int
    run_id: str
    iteration: int | None  # None: a reference (the teachers); -1: the starting student
    placements: tuple[tuple[str, Placement], ...] = ()  # (folder, placement) where not the default

    def placement(self, folder: str) -> Placement | None:
        return dict(self.placements).get(str(folder))
