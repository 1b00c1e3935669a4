"""Offline GRPO on TRL: a thin ``GRPOTrainer`` subclass that takes completions, group advantages
and stored log-probs from snapshot rows instead of generating, and the paper's objective
(trainer/losses.py) in place of TRL's loss.

What TRL still does: the Trainer loop, AdamW, schedulers, gradient accumulation, DeepSpeed
ZeRO-3 through accelerate, logging (``report_to``), checkpointing and resume, and the batch
buffering that makes ``updates_per_batch`` > 1 reuse a sampled batch. What is overridden:
``_generate_and_score_completions`` (rows -> tensors, trainer/offline_batch.py),
``_get_train_sampler`` (plain shuffled rows: advantages are already per group, so groups need not
share a batch), ``_set_signature_columns_if_needed`` and ``_compute_loss`` (one forward pass; the
student's log-probs of the completion and of the teacher's top-k tokens come from the same logits).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from schemas.errors import ConfigError, TrainingDiverged
from schemas.snapshot import Manifest
from trainer.checkpoints import CARRIED_FILES, META_NAME
from trainer.config import GRPORunConfig, config_file, resolve_accelerate_deepspeed_file
from trainer.data import load_verified, quiet_callbacks, quiet_libraries
from trainer.losses import masters_loss
from trainer.offline_batch import OfflineBatcher, check_token_ids, training_rows

STATE_DIR = "trainer_state"
FORWARD_KEYS = ("pixel_values", "image_grid_thw", "mm_token_type_ids", "token_type_ids", "image_sizes",
                "pixel_attention_mask")


def stored_reward(completions, reward, **_) -> list[float]:
    """The reward each row already carries (TRL's constructor wants a reward function; offline,
    rewards were computed in the catalog and only their mean is logged from here)."""
    return [float(r) for r in reward]


class OfflineGRPOTrainer(GRPOTrainer):
    """GRPOTrainer over pre-generated, pre-scored rows."""

    def __init__(self, *args, batcher: OfflineBatcher, loss_weights: dict[str, float], **kwargs):
        super().__init__(*args, **kwargs)
        self.batcher = batcher
        self.loss_weights = loss_weights

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(self.train_dataset.column_names)

    def _get_train_sampler(self, dataset=None):
        dataset = dataset if dataset is not None else self.train_dataset
        return RepeatSampler(data_source=dataset, mini_repeat_count=1,
                             batch_size=self.args.generation_batch_size,
                             repeat_count=self.num_iterations * self.args.steps_per_generation,
                             shuffle=True, seed=self.args.seed)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        device = self.accelerator.device
        batch = self.batcher(inputs)
        out = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if "image_grid_thw" in out:  # TRL splits/reassembles flattened patches per image with these
            out["num_images"] = [1] * len(inputs)
        tokens = out["completion_mask"].sum()
        out["num_items_in_batch"] = self.accelerator.gather(tokens).sum()
        mode = "train" if self.model.training else "eval"
        rewards = torch.tensor([float(r["reward"]) for r in inputs], device=device)
        self._metrics[mode]["reward"].append(self.accelerator.gather(rewards).mean().item())
        self._metrics[mode]["completions/mean_length"].append(
            self.accelerator.gather(out["completion_mask"].sum(1).float()).mean().item())
        return out

    def _compute_loss(self, model, inputs):
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        mask = inputs["completion_mask"]
        t = completion_ids.shape[1]
        forward = {k: inputs[k] for k in FORWARD_KEYS if inputs.get(k) is not None}
        with self.accelerator.autocast():
            logits = model(input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
                           attention_mask=torch.cat([inputs["prompt_mask"], mask], dim=1),
                           logits_to_keep=t + 1, use_cache=False, **forward).logits[:, :-1].float()
        lse = logits.logsumexp(-1, keepdim=True)
        logps = (logits.gather(-1, completion_ids.unsqueeze(-1)) - lse).squeeze(-1)
        student_topk = None
        if "teacher_topk_ids" in inputs:
            student_topk = logits.gather(-1, inputs["teacher_topk_ids"]) - lse
        stored = inputs["old_per_token_logps"]
        # padded positions take the stored value: their (masked) terms are exactly 0, never inf * 0
        logps = torch.where(mask.bool(), logps, stored)
        w = self.loss_weights
        loss, metrics = masters_loss(logps, stored, stored, inputs["advantages"], mask,
                                     student_topk_logps=student_topk,
                                     teacher_topk_logps=inputs.get("teacher_topk_logps"),
                                     beta=w["beta"], jsd_weight=w["jsd_weight"],
                                     epsilon_low=w["epsilon_low"], epsilon_high=w["epsilon_high"])
        mode = "train" if self.model.training else "eval"
        for name, value in metrics.items():
            self._metrics[mode][f"masters/{name}"].append(
                self.accelerator.gather(torch.tensor(value, device=logits.device)).mean().item())
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        return loss


def grpo_args(config: GRPORunConfig, generation_batch: int | None = None) -> GRPOConfig:
    """TRL arguments for the run (built before the model is loaded, so ZeRO-3 can partition it
    as it loads)."""
    resolve_accelerate_deepspeed_file()
    deepspeed = config_file(config.deepspeed, "deepspeed") if config.deepspeed else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    gen = generation_batch or config.batch_size * config.gradient_accumulation_steps * world
    if gen < 2:
        raise ConfigError("batch_size x gradient_accumulation_steps x processes must be at least 2 "
                          "(TRL's GRPO batches hold at least two completions)")
    epochs = {"max_steps": config.max_steps} if config.max_steps else {"num_train_epochs": config.num_epochs}
    return GRPOConfig(
        output_dir=str(Path(config.output_dir) / STATE_DIR), **epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_iterations=config.updates_per_batch, num_generations=gen,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        beta=0.0,  # the KL term is ours, against the stored log-probs: TRL must not load a reference model
        epsilon=config.epsilon_low, epsilon_high=config.epsilon_high, loss_type="grpo",
        seed=config.seed, data_seed=config.seed, logging_steps=config.logging_steps,
        report_to=config.report_to, save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500, save_total_limit=config.save_total_limit,
        use_cpu=not torch.cuda.is_available(), bf16=config.bf16, fp16=False,
        gradient_checkpointing=config.gradient_checkpointing, deepspeed=deepspeed,
        # transformers' per-step bar (and the log dicts it writes under it) off: see quiet_callbacks
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
        log_completions=False, shuffle_dataset=True, temperature=1.0)


@dataclass
class GRPORun:
    """A ready trainer and what it was built from."""

    trainer: OfflineGRPOTrainer
    processor: Any
    rows: Any
    manifest: Manifest
    manifest_hash: str


def build_trainer(config: GRPORunConfig) -> GRPORun:
    """Verify the snapshot, check its rows against the student, and build the trainer."""
    with quiet_libraries():
        return _build_trainer(config)


def _build_trainer(config: GRPORunConfig) -> GRPORun:
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)
    ds, manifest, manifest_hash = load_verified(config.snapshot)
    rows, top_k = training_rows(ds, config.sources, config.jsd_weight > 0, config.snapshot)
    args = grpo_args(config)
    processor = AutoProcessor.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.float32)
    # the head width from the config: under ZeRO-3 the weight is partitioned (its local shape is 0)
    check_token_ids(rows, int(model.config.get_text_config().vocab_size), config.snapshot, config.model)
    if rows.num_rows < args.generation_batch_size:
        raise ConfigError(f"snapshot {config.snapshot} has {rows.num_rows} trainable rows, fewer than one batch "
                          f"(batch_size x gradient_accumulation_steps x processes = {args.generation_batch_size}): "
                          "lower batch_size or generate more")
    weights = {k: getattr(config, k) for k in ("beta", "jsd_weight", "epsilon_low", "epsilon_high")}
    trainer = OfflineGRPOTrainer(
        model=model, reward_funcs=[stored_reward], args=args, train_dataset=rows, processing_class=processor,
        batcher=OfflineBatcher(processor, top_k, config.max_completion_tokens), loss_weights=weights)
    quiet_callbacks(trainer, config.output_dir, config.progress, config.print_logs)
    return GRPORun(trainer, processor, rows, manifest, manifest_hash)


def first_non_finite(log_history: list[dict]) -> str | None:
    """The first logged loss or gradient norm that is NaN or infinite, as 'step N: key = value'."""
    for h in log_history:
        for key in ("loss", "grad_norm"):
            v = h.get(key)
            if isinstance(v, float) and not math.isfinite(v):
                return f"step {h.get('step')}: {key} = {v}"
    return None


def train_grpo(config: GRPORunConfig) -> dict[str, Any]:
    """Verify the snapshot, train, save the checkpoint (+ meta.json) to ``config.output_dir``,
    return the final metrics. Under ``accelerate launch`` every process runs this; only the main
    process writes the checkpoint's side files. Each log dict goes to ``output_dir``/trainer_log.jsonl."""
    with quiet_libraries():
        return _train_grpo(config)


def _train_grpo(config: GRPORunConfig) -> dict[str, Any]:
    run = build_trainer(config)
    trainer, rows = run.trainer, run.rows
    state = Path(trainer.args.output_dir)
    resume = get_last_checkpoint(str(state)) if config.resume and state.is_dir() else None
    result = trainer.train(resume_from_checkpoint=resume)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step,
               "epochs": trainer.state.epoch, "rows": rows.num_rows,
               "first_log": logs[0] if logs else None, "last_log": logs[-1] if logs else None}
    bad = first_non_finite(trainer.state.log_history)
    if not math.isfinite(result.training_loss) or bad is not None:
        # transformers leaves NaN steps out of the mean training loss: the logs tell
        raise TrainingDiverged(f"GRPO diverged on {config.snapshot}: {bad or f'training loss {result.training_loss}'}; "
                               "nothing was saved. Lower train.learning_rate or train.num_epochs")
    out = Path(config.output_dir)
    trainer.save_model(str(out))  # gathers ZeRO-3 partitions (stage3_gather_16bit_weights_on_model_save)
    if trainer.is_world_process_zero():
        run.processor.save_pretrained(out)
        for name in CARRIED_FILES:
            if (Path(config.model) / name).is_file():
                (out / name).write_text((Path(config.model) / name).read_text())
        meta = {"kind": "grpo", "base_model": config.model, "snapshot": run.manifest.name,
                "snapshot_path": str(Path(config.snapshot).absolute()),
                "snapshot_manifest_sha256": run.manifest_hash, "catalog_version": run.manifest.catalog_version,
                "reward_config_id": run.manifest.reward_config_id, "trainer_config": config.model_dump(),
                "processes": trainer.accelerator.num_processes,
                "deepspeed": trainer.is_deepspeed_enabled, "metrics": metrics}
        (out / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    trainer.accelerator.wait_for_everyone()
    return metrics
