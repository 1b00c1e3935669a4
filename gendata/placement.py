"""Where and in what precision a model is loaded: ``dtype`` and ``device_map`` per model of a run.

- ``dtype``: ``auto`` (the checkpoint's own, usually bfloat16 for real checkpoints), ``bfloat16``,
  ``float16`` or ``float32``. Unset: float32 on the CPU, ``auto`` on a GPU.
- ``device_map``: transformers/accelerate big-model placement, ``auto``, ``balanced``,
  ``balanced_low_0``, ``sequential``, one device (``cpu``, ``cuda:1``), or an explicit map of
  module names to devices; ``max_memory`` bounds what each device takes. Unset: the whole model
  on one device (the first GPU, or the CPU). A teacher can so span several GPUs while the
  student sits on one.
- ``tensor_parallel_size``: GPUs the vLLM backend splits the model over (vLLM places by tensor
  parallelism, not by ``device_map``).

Whatever the model's dtype, the scoring pass does its vocabulary-wide math (softmax, JSD, KL,
top-k) in float32 (``gendata/scoring.py``).
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from pydantic import Field, field_validator

from schemas.config import StrictModel

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DEVICE = re.compile(r"^(cpu|meta|disk|cuda|cuda:\d+|mps|xpu(:\d+)?|\d+)$")


def _check_device(value, where: str):
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and DEVICE.match(value):
        return value
    raise ValueError(f"{where}: {value!r} is not a device (cpu, cuda, cuda:N, N, disk)")


class Placement(StrictModel):
    """Precision and placement of one model (generation, scoring and evaluation)."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = Field(
        None, description="auto (the checkpoint's) / bfloat16 / float16 / float32; unset: float32 on CPU, "
        "auto on a GPU")
    device_map: str | dict[str, int | str] | None = Field(
        None, description="auto / balanced / balanced_low_0 / sequential / one device / {module: device}; "
        "unset: the whole model on one device")
    max_memory: dict[str | int, str] | None = Field(
        None, description="per-device memory bound for device_map placement, e.g. {0: 70GiB, cpu: 200GiB}")
    tensor_parallel_size: int | None = Field(None, gt=0, description="GPUs the vllm backend shards the model over")

    @field_validator("device_map")
    @classmethod
    def _device_map(cls, v):
        if isinstance(v, str):
            if v not in DEVICE_MAP_STRATEGIES:
                _check_device(v, "device_map")
        elif isinstance(v, dict):
            if not v:
                raise ValueError("device_map: an explicit map needs at least one module (\"\": device for all)")
            for module, device in v.items():
                _check_device(device, f"device_map[{module!r}]")
        return v

    @field_validator("max_memory")
    @classmethod
    def _max_memory(cls, v):
        for device, amount in (v or {}).items():
            _check_device(device, "max_memory")
            if not re.match(r"^\d+(\.\d+)?\s*([KMGT]i?B)?$", str(amount)):
                raise ValueError(f"max_memory[{device!r}]: {amount!r} is not an amount like 70GiB")
        return v

    def torch_dtype(self, on_gpu: bool):
        """What ``from_pretrained(dtype=...)`` gets."""
        name = self.dtype or ("auto" if on_gpu else "float32")
        return name if name == "auto" else getattr(torch, name)

    def from_pretrained_kwargs(self, device: str) -> dict:
        """``from_pretrained`` keyword arguments; ``device`` is the single device used when no
        ``device_map`` is set."""
        on_gpu = (self.device_map is not None and torch.cuda.is_available()) or device.startswith("cuda")
        kwargs = {"dtype": self.torch_dtype(on_gpu)}
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
            if self.max_memory:
                kwargs["max_memory"] = dict(self.max_memory)
        return kwargs

    def vllm_kwargs(self) -> dict:
        """vLLM ``LLM(...)`` keyword arguments."""
        out = {"dtype": self.dtype or "auto"}
        if self.tensor_parallel_size:
            out["tensor_parallel_size"] = self.tensor_parallel_size
        return out


DEFAULT = Placement()
