"""Models kept loaded across the stages of one process (an inline run, or one shard worker): the
iteration's teacher and student are each loaded once and serve generation, scoring and
evaluation. Bounded (least recently used first out), so a new iteration's student replaces the
old one instead of piling up; the loop clears it after each iteration's Gen-Data, so that
training finds the memory (and the GPUs) free."""

from __future__ import annotations

import gc
from collections import OrderedDict
from pathlib import Path


class ModelCache:
    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._models: OrderedDict[str, tuple] = OrderedDict()
        self._plans: dict[tuple, object] = {}
        self.loads = 0  # models loaded from disk (the production benchmark counts them)

    def get(self, path: str | Path, placement=None):
        """(model, processor) of a checkpoint folder, loaded on first use with ``placement``
        (gendata.placement.Placement: dtype, device_map); asked with another placement, the
        folder is loaded again."""
        from gendata.hf_generate import load_vlm

        key = self._key(path, placement)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        import transformers

        transformers.utils.logging.disable_progress_bar()  # the stage's own bar says what is going on
        while len(self._models) >= self.capacity:
            old, _ = self._models.popitem(last=False)
            self._plans = {k: v for k, v in self._plans.items() if k[0] != old}
            gc.collect()
        self._models[key] = load_vlm(key[0], placement=placement)
        self.loads += 1
        return self._models[key]

    @staticmethod
    def _key(path, placement) -> tuple[str, str]:
        return str(Path(path).absolute()), placement.model_dump_json() if placement is not None else ""

    def mask_plan(self, path: str | Path, ratio: float, mask_spec=None, placement=None):
        """The mask thresholds of a cached model at ``ratio`` (None when unmasked), computed once."""
        from gendata.masking import plan_masks

        if ratio <= 0:
            return None
        model, _ = self.get(path, placement)
        key = (self._key(path, placement), float(ratio), repr(mask_spec))
        if key not in self._plans:
            self._plans[key] = plan_masks(model, [ratio], mask_spec)
        return self._plans[key]

    @property
    def held(self) -> int:
        """Models in memory now."""
        return len(self._models)

    def clear(self) -> None:
        """Drop every model (and free the GPU memory they held)."""
        self._models.clear()
        self._plans.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
