"""Typed configs of the trainer (unknown keys refused)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.config import StrictModel
from schemas.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parents[1]  # where configs/ lies beside trainer/ (an editable install)


def config_file(value: str, what: str) -> str:
    """A config file named by a relative path, as it exists: from the working directory, or else
    from the checkout (the shipped configs/ name each other relative to it). Raises ConfigError
    naming both places when it is in neither."""
    path = Path(value).expanduser()
    if path.is_file():
        return str(path)
    if not path.is_absolute() and (CHECKOUT / path).is_file():
        return str(CHECKOUT / path)
    raise ConfigError(f"{what}: {value} is not a file (looked in {Path.cwd()}"
                      + ("" if path.is_absolute() else f" and in {CHECKOUT}") + "); give an absolute path")


def resolve_accelerate_deepspeed_file() -> None:
    """``accelerate launch --config_file configs/accelerate/zero3.yaml`` hands the yaml's
    ``deepspeed_config_file`` to each process as written (ACCELERATE_DEEPSPEED_CONFIG_FILE), where
    transformers opens it relative to the working directory: make it a path that exists, so the
    shipped configs work from any directory."""
    value = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if value and value.lower() != "none":
        os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = config_file(value, "deepspeed_config_file (accelerate config)")


class SFTRunConfig(StrictModel):
    """Supervised fine-tuning of a VLM on a snapshot-format folder (prompt, image, completion)."""

    model: str = Field(description="checkpoint folder to start from")
    snapshot: str = Field(description="snapshot-format folder (verified against its manifest)")
    output_dir: str = Field(description="where the trained checkpoint and meta.json go")
    max_steps: int = Field(500, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="per-device batch size")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup_steps: int = Field(10, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="data order and init seed")
    logging_steps: int = Field(50, gt=0, description="log every N steps")
    report_to: list[str] = Field(default_factory=list, description="TRL/transformers loggers, e.g. ['tensorboard']")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N steps (None: only at the end)")
    resume: bool = Field(False, description="resume from the last checkpoint in output_dir")
    trust_remote_code: bool = Field(True, description="allow the processor code shipped in the checkpoint "
                                    "(the image-only shims of tiny fixtures); set False for untrusted checkpoints")
    progress: bool = Field(True, description="show one progress bar of the optimizer steps (the log dicts go "
                           "to output_dir/trainer_log.jsonl)")


class GRPOSettings(StrictModel):
    """The training settings of offline GRPO (the paper's objective), without paths: what a run
    config of the loop (masters.run_config.TrainConfig) sets per iteration.

    Defaults are the paper's: lr 1e-6, beta 0.1, one update per sampled batch (importance ratio 1
    against the stored student log-probs). Tiny models need a larger learning rate."""

    max_steps: int | None = Field(None, gt=0, description="optimizer steps (None: num_epochs over the rows)")
    num_epochs: float = Field(1.0, gt=0, description="passes over the snapshot's rows when max_steps is None")
    batch_size: int = Field(8, gt=0, description="completions per device per micro-batch")
    gradient_accumulation_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    updates_per_batch: int = Field(1, gt=0, description="optimizer passes over each sampled batch (TRL's "
                                   "num_iterations); 1 is the paper's regime (ratio 1), more gives real "
                                   "importance ratios against the stored log-probs, with clipping")
    learning_rate: float = Field(1e-6, gt=0, description="AdamW learning rate (the paper's 1e-6)")
    lr_scheduler: str = Field("constant", description="transformers scheduler name")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    beta: float = Field(0.1, ge=0, description="weight of KL(policy || reference); the stored student "
                        "log-probs are the reference")
    jsd_weight: float = Field(1.0, ge=0, description="weight of the JSD(masked teacher || student) term "
                              "over the stored teacher top-k plus a tail bucket (0: off)")
    epsilon_low: float = Field(0.2, gt=0, lt=1, description="lower clip of the importance ratio (1 - eps)")
    epsilon_high: float = Field(0.2, gt=0, description="upper clip of the importance ratio (1 + eps)")
    sources: list[Literal["teacher", "student"]] = Field(
        default_factory=lambda: ["teacher", "student"], min_length=1,
        description="which responses to train on (the paper: both)")
    max_completion_tokens: int | None = Field(None, gt=0, description="truncate longer completions (and "
                                              "their per-token columns) to this many tokens")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON (e.g. configs/deepspeed/zero3.json); "
                                  "under `accelerate launch` with a DeepSpeed accelerate config this is "
                                  "taken from there instead")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPUs)")


class GRPORunConfig(GRPOSettings):
    """Offline GRPO of a student on a snapshot folder: the settings, the paths and run options."""

    model: str = Field(description="the student checkpoint folder to start from")
    snapshot: str = Field(description="snapshot folder (verified against its manifest before training)")
    output_dir: str = Field(description="where the trained checkpoint, meta.json and trainer state go")
    seed: int = Field(0, description="data order seed")
    logging_steps: int = Field(10, gt=0, description="log every N steps")
    report_to: list[str] = Field(default_factory=list, description="TRL/transformers loggers, e.g. ['tensorboard']")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N steps (None: only at the end)")
    save_total_limit: int | None = Field(2, gt=0, description="intermediate checkpoints kept")
    resume: bool = Field(False, description="resume from the last checkpoint in output_dir/trainer_state")
    trust_remote_code: bool = Field(True, description="allow the processor code shipped in the checkpoint "
                                    "(the image-only shims of tiny fixtures); set False for untrusted checkpoints")
    print_logs: bool = Field(False, description="also print each logged metrics dict (every one is written to "
                             "output_dir/trainer_log.jsonl, and to report_to's loggers)")
    progress: bool = Field(True, description="show one progress bar of the optimizer steps")
