"""The typed configuration of a Masters run (`masters run CONFIG.yaml`). Unknown keys are refused
with their name; `masters validate CONFIG` checks a file without running anything.

Model references are folders, or ``ladder:<member>`` for the tiny ladder of the embedded default
(student, S, M, L; built or reused from the cache by `masters fixtures`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from gendata.backends import BackendName, SamplingConfig, VLLMOptions
from gendata.placement import Placement
from gendata.scoring import ScoringConfig
from gendata.schedule import MaskSchedule
from rewards.judges import JUDGES
from schemas.config import RewardWeights, StrictModel
from schemas.errors import ConfigError
from schemas.registry import KindConfig
from trainer.config import GRPOSettings


class QuestionsConfig(StrictModel):
    """Where the questions come from (landed in the catalog once; a re-run adds nothing)."""

    source: Literal["synthetic", "catalog"] = Field("synthetic", description="synthetic: the built-in visual QA; "
                                                    "catalog: questions already in the catalog "
                                                    "(e.g. from `masters questions hf`)")
    train: int = Field(64, gt=0, description="synthetic train questions")
    test: int = Field(100, gt=0, description="synthetic held-out questions (evaluation)")
    validation: int = Field(0, ge=0, description="synthetic validation questions, carved from the train split "
                            "(evaluate on them with eval.split: validation to tune without seeing test)")
    seed: int = Field(0, description="synthetic generator seed")
    image_size: int = Field(112, gt=0, description="synthetic image side in pixels")


class ModelEntry(Placement):
    """A model of the run and how it is loaded (gendata.placement: dtype, device_map, ...)."""

    model: str = Field(description="checkpoint folder or ladder:<member>")

    @property
    def placement(self) -> Placement:
        return Placement(**self.model_dump(include=set(Placement.model_fields)))


class StudentModel(ModelEntry):
    """The starting student; every student the run trains is loaded the same way."""


class TeacherStage(ModelEntry):
    """One rung of the teacher ladder: this teacher for iterations [start, next stage's start)."""

    start: int = Field(0, ge=0, description="first iteration taught by this teacher")


class JudgeConfig(KindConfig):
    """The judge giving R_acc: a kind of rewards.judges.JUDGES and its parameters, both checked when
    the config is validated (``judge.kind``, ``judge.params.<key>``)."""

    registry: ClassVar = JUDGES

    kind: str = Field("rule", description="rule / exact / numeric / choice / llm (rewards.judges.JUDGES)")
    params: Any = Field(default_factory=dict, validate_default=True,
                        description="the judge's parameters: none for rule / exact / choice; numeric: tolerance; "
                        "llm: model, base_url, api_key_env, ... (rewards/llm_judge.py LLMJudgeConfig)")


class TrainConfig(GRPOSettings):
    """Per-iteration trainer settings (trainer.config.GRPOSettings) and how training is launched."""

    launcher: Literal["inline", "accelerate"] = Field("inline", description="inline: train in this process; "
                                                      "accelerate: `accelerate launch -m trainer grpo` workers")
    accelerate_config: str | None = Field(None, description="accelerate config file for launcher: accelerate, "
                                          "e.g. configs/accelerate/zero3.yaml")
    num_processes: int | None = Field(None, gt=0, description="processes (GPUs) for launcher: accelerate")


class ShardResources(StrictModel):
    """What one shard reserves on the Ray cluster (Ray's own resource names)."""

    num_cpus: float = Field(1.0, gt=0, description="CPUs per shard")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per shard (a fraction shares one GPU)")


class ProductionConfig(StrictModel):
    """How Gen-Data stages run: in this process, or as N shards on Ray."""

    launcher: Literal["inline", "ray"] = Field("inline", description="inline: this process; ray: each stage fanned "
                                               "out as `shards` Ray actors, registered by this process")
    shards: int = Field(1, ge=1, description="Ray actors (shards) per stage")
    ray_address: str | None = Field(None, description="null: start a local Ray instance; auto: join the cluster "
                                    "this node belongs to; or a cluster address (ray://host:10001, host:6379)")
    resources_per_shard: ShardResources = Field(default_factory=ShardResources,
                                                description="resources each shard reserves")
    threads_per_shard: int | None = Field(None, gt=0, description="torch threads per shard (default: its num_cpus; "
                                          "inline: torch's default)")


class EvalConfig(StrictModel):
    split: str = Field("test", description="question split evaluated after each iteration")
    max_new_tokens: int = Field(8, gt=0, description="answer length limit (greedy)")
    limit: int | None = Field(None, gt=0, description="evaluate on at most this many questions")
    references: list[str] = Field(default_factory=list, description="checkpoints measured once beside the "
                                  "teachers, e.g. ladder:ceiling (the student's architecture trained on ground "
                                  "truth: how far the student could go)")


class RunConfig(StrictModel):
    """A whole Masters run."""

    run_id: str = Field(description="names the run in the catalog (iterations, snapshots)",
                        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    output_dir: str | None = Field(None, description="where students are written (default: <catalog>/runs/<run_id>)")
    iterations: int = Field(5, gt=0, description="iterations of the loop")
    seed: int = Field(0, description="sampling and training seed")
    questions: QuestionsConfig = Field(default_factory=QuestionsConfig, description="question source")
    student: StudentModel = Field(default_factory=lambda: StudentModel(model="ladder:student"),
                                  description="starting student folder or ladder:<member>, or "
                                  "{model: ..., dtype: ..., device_map: ...}")
    teachers: list[TeacherStage] = Field(
        default_factory=lambda: [TeacherStage(model="ladder:M", start=0), TeacherStage(model="ladder:L", start=2)],
        min_length=1, description="the teacher ladder, in order of start")
    mask: MaskSchedule | None = Field(None, description="mask schedule (default: the paper's over `iterations`)")
    teacher_responses: int = Field(4, ge=0, description="responses per question from the masked teacher")
    student_responses: int = Field(4, ge=0, description="responses per question from the student")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="sampling (the paper's)")
    backend: BackendName = Field("transformers", description="generation backend: transformers / vllm "
                                 "(gendata.backends.BACKENDS)")
    vllm: VLLMOptions = Field(default_factory=VLLMOptions, description="vLLM engine settings (backend: vllm)")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="teacher-forced scoring")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="the judge giving R_acc")
    reward: RewardWeights = Field(default_factory=RewardWeights, description="reward weights and divergence")
    production: ProductionConfig = Field(default_factory=ProductionConfig, description="how Gen-Data stages run "
                                         "(inline or as shards on Ray)")
    train: TrainConfig = Field(default_factory=TrainConfig, description="trainer settings per iteration")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation after each iteration")

    @field_validator("student", mode="before")
    @classmethod
    def _student(cls, v):
        return {"model": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self):
        starts = [t.start for t in self.teachers]
        if starts[0] != 0:
            raise ValueError("teachers: the first stage must start at iteration 0")
        if starts != sorted(set(starts)):
            raise ValueError(f"teachers: stage starts must be increasing, got {starts}")
        if self.mask is not None and self.mask.iterations != self.iterations:
            raise ValueError(f"mask.iterations ({self.mask.iterations}) must equal iterations ({self.iterations})")
        if self.teacher_responses + self.student_responses < 2:
            raise ValueError("teacher_responses + student_responses must be at least 2 (a GRPO group)")
        if self.production.launcher == "ray" and self.backend == "vllm":
            gpus = self.production.resources_per_shard.num_gpus
            for i, m in enumerate([*self.teachers, self.student]):
                if (m.tensor_parallel_size or 1) > max(gpus, 1):
                    where = f"teachers.{i}" if i < len(self.teachers) else "student"
                    raise ValueError(f"{where}.tensor_parallel_size ({m.tensor_parallel_size}) is more GPUs than a "
                                     f"shard reserves (production.resources_per_shard.num_gpus: {gpus:g})")
        return self

    @property
    def schedule(self) -> MaskSchedule:
        return self.mask or MaskSchedule(iterations=self.iterations)

    def teacher_for(self, iteration: int) -> str:
        return self.stage_for(iteration).model

    def stage_for(self, iteration: int) -> TeacherStage:
        return [t for t in self.teachers if t.start <= iteration][-1]


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    doc.update(overrides or {})
    return RunConfig.parse(doc, where=str(path))
