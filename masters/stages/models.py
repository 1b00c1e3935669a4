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
            self._models.popitem(last=False)
            gc.collect()
        self._models[key] = load_vlm(key[0], placement=placement)
        self.loads += 1
        return self._models[key]

    @staticmethod
    def _key(path, placement) -> tuple[str, str]:
        from gendata.placement import DEFAULT

        return str(Path(path).absolute()), (placement or DEFAULT).model_dump_json()  # None is the default

    def mask_plan(self, path: str | Path, ratio: float, mask_spec=None, placement=None, ratios=()):
        """The mask thresholds of a cached model at ``ratio`` (None when unmasked). The first call
        for a model computes every ratio of ``ratios`` too, in one pass; plans outlive ``clear()``
        (they are a few floats per tensor), so a later iteration's ratio costs no pass."""
        from gendata.masking import plan_masks

        dtype = placement.dtype if placement is not None else None  # thresholds follow the values loaded
        return self._plan(("memory", str(Path(path).absolute()), dtype, repr(mask_spec)), ratio, ratios,
                          lambda wanted: plan_masks(self.get(path, placement)[0], wanted, mask_spec))

    def checkpoint_plan(self, path: str | Path, ratio: float, mask_spec=None, ratios=()):
        """Thresholds computed from the checkpoint's files without loading it (for engines that
        load a masked copy: vLLM), every ratio of ``ratios`` in one pass, kept like ``mask_plan``'s."""
        from gendata.checkpoint_masking import plan_checkpoint_masks

        return self._plan(("files", str(Path(path).absolute()), None, repr(mask_spec)), ratio, ratios,
                          lambda wanted: plan_checkpoint_masks(path, wanted, mask_spec))

    def _plan(self, key: tuple, ratio: float, ratios, compute):
        if ratio <= 0:
            return None
        plan = self._plans.get(key)
        if plan is None or not any(abs(r - ratio) < 1e-9 for r in plan.ratios):
            wanted = sorted({float(ratio), *(float(r) for r in ratios if r > 0), *(plan.ratios if plan else ())})
            plan = self._plans[key] = compute(wanted)
        return plan

    @property
    def held(self) -> int:
        """Models in memory now."""
        return len(self._models)

    def clear(self) -> None:
        """Drop every model (and free the GPU memory they held)."""
        self._models.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

