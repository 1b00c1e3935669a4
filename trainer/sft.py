"""SFT with TRL's SFTTrainer on a snapshot-format folder: teacher warm-up and the
naive-distillation baseline (SFT on teacher responses)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from schemas.errors import TrainingDiverged
from trainer.checkpoints import load_model_and_processor, save_checkpoint
from trainer.config import SFTRunConfig
from trainer.data import load_verified, quiet_callbacks, quiet_libraries, to_prompt_completion


def train_sft(config: SFTRunConfig) -> dict[str, Any]:
    """Train, save the checkpoint (+ meta.json) to ``config.output_dir``, return the metrics. Each
    log dict goes to ``output_dir``/trainer_log.jsonl; nothing is printed but one bar (``progress``)."""
    with quiet_libraries():
        return _train_sft(config)


def _train_sft(config: SFTRunConfig) -> dict[str, Any]:
    # TRL 1.16 passes the old argument name to transformers 5: harmless, and not the user's doing
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)
    ds, manifest, manifest_hash = load_verified(config.snapshot)
    train = to_prompt_completion(ds, config.snapshot)
    torch.manual_seed(config.seed)
    model, processor = load_model_and_processor(config.model, config.trust_remote_code)
    out = Path(config.output_dir)
    args = SFTConfig(
        output_dir=str(out / "trainer_state"), max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay, seed=config.seed, data_seed=config.seed,
        logging_steps=config.logging_steps, report_to=config.report_to,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
        dataloader_num_workers=0, remove_unused_columns=False, max_length=None,
        disable_tqdm=True, completion_only_loss=True)  # transformers' per-step bar off: quiet_callbacks
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
    quiet_callbacks(trainer, out, config.progress)
    resume = get_last_checkpoint(args.output_dir) if config.resume and Path(args.output_dir).is_dir() else None
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {"train_loss": result.training_loss, "first_logged_loss": losses[0] if losses else None,
               "last_logged_loss": losses[-1] if losses else None,
               "steps": trainer.state.global_step, "epochs": trainer.state.epoch}
    if not math.isfinite(result.training_loss):
        raise TrainingDiverged(f"SFT diverged on {config.snapshot}: training loss {result.training_loss}; nothing "
                               "was saved. Lower the learning rate")
    save_checkpoint(trainer.model, processor, out, {
        "kind": "sft", "base_model": config.model, "snapshot": manifest.name,
        "snapshot_path": str(Path(config.snapshot).absolute()),
        "snapshot_manifest_sha256": manifest_hash, "catalog_version": manifest.catalog_version,
        "trainer_config": config.model_dump(), "metrics": metrics}, base_model=config.model)
    return metrics
