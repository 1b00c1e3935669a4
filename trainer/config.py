"""Typed configs of the trainer (unknown keys refused)."""

from __future__ import annotations

from pydantic import Field

from schemas.config import StrictModel


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
    progress: bool = Field(True, description="show a progress bar")
