"""Per-layer magnitude masking of a teacher, temporary and bit-exactly reversible.

For a ratio r, each masked weight tensor keeps the entries with |w| >= lambda_r, where lambda_r is
that tensor's own threshold: the (k+1)-th smallest |w| with k = round(r * n), so that a fraction r
of the tensor is zeroed (exactly, unless |w| ties at the threshold). Thresholds are per tensor
("per layer"), never global.

Which tensors: by default the weights of every ``nn.Linear`` of the language model and the
vision tower (attention and MLP projections, the vision merger/projector), and nothing else:
embeddings, the (tied) LM head, norms, biases and convolutional patch embeddings are left
alone. ``MaskSpec(include=..., exclude=...)`` changes that with glob patterns on parameter names.

Thresholds for every ratio of a schedule come from one pass per tensor, not one per ratio: a
single sort of |w| for tensors up to ``SORT_LIMIT`` elements; above that, an exact radix
selection on the bit patterns of |w| (one chunked pass counts the high 16 bits and keeps the
members of the few buckets a small random sample points at; a sort of those members gives the
exact values), so no tensor is copied whole (its cost against one read of the weights is
measured by ``benchmarks/masking.py``).

``gendata/checkpoint_masking.py`` computes the same plan, and writes masked checkpoints, straight
from safetensors files, tensor by tensor, without loading the model.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

SORT_LIMIT = 1 << 16  # elements; larger tensors use the radix selection (about 3x faster than a sort)


@dataclass(frozen=True)
class MaskSpec:
    """Which parameters a mask touches: names matching any ``include`` glob and no ``exclude``
    glob; ``include=None`` means the default (every nn.Linear weight but the LM head)."""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ("*lm_head*", "*embed_tokens*")


def masked_parameters(model: nn.Module, spec: MaskSpec | None = None) -> dict[str, nn.Parameter]:
    spec = spec or MaskSpec()
    if spec.include is None:
        names = {f"{mod_name}.weight" if mod_name else "weight"
                 for mod_name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    else:
        names = {n for n, _ in model.named_parameters() if any(fnmatch.fnmatch(n, p) for p in spec.include)}
    params = dict(model.named_parameters())
    chosen = {n: params[n] for n in sorted(names)
              if n in params and not any(fnmatch.fnmatch(n, p) for p in spec.exclude)}
    seen, out = set(), {}
    for n, p in chosen.items():  # tied weights are one tensor: mask it once
        if id(p) not in seen:
            seen.add(id(p))
            out[n] = p
    return out


def _ranks(n: int, ratios: Sequence[float]) -> list[int]:
    return [min(n, max(0, round(r * n))) for r in ratios]


def _thresholds_by_sort(a: torch.Tensor, ratios: Sequence[float]) -> list[float]:
    s = torch.sort(a).values
    n = s.numel()
    return [float("inf") if k >= n else (float(s[k]) if k > 0 else 0.0) for k in _ranks(n, ratios)]


def _flat_abs_chunks(w: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """|w| as float32 on the CPU, ``chunk`` elements at a time (w may be bf16/fp16, or on a GPU)."""
    flat = w.detach().reshape(-1)
    for start in range(0, flat.numel(), chunk):
        yield flat[start:start + chunk].float().abs().cpu()


HIGH = 1 << 16  # buckets of the radix selection: the high 16 bits of |w| (sign, exponent, 7 mantissa bits)
NON_FINITE = 0x7F80  # buckets at or above it hold inf and NaN


def _guess_buckets(w: torch.Tensor, ranks: Sequence[int], sample: int = 1 << 14) -> torch.Tensor:
    """Buckets likely to hold the wanted ranks, from a seeded random sample of |w| (a window of
    +-5 sigma of the sample quantile around each rank). Only speed depends on the guess."""
    flat = w.detach().reshape(-1)
    n = flat.numel()
    g = torch.Generator().manual_seed(n)
    s = torch.sort(flat[torch.randint(0, n, (sample,), generator=g).to(flat.device)].float().abs().cpu()).values
    s = s.view(torch.int32) >> 16
    chosen = torch.zeros(HIGH, dtype=torch.bool)
    for k in ranks:
        q = k / n
        half = 5 * math.sqrt(sample * q * (1 - q)) + 2
        lo, hi = int(max(0, q * sample - half)), int(min(sample - 1, q * sample + half))
        chosen[int(s[lo]):int(s[hi]) + 1] = True
    return chosen


def _thresholds_by_radix(w: torch.Tensor, ratios: Sequence[float], chunk: int = 1 << 20,
                         name: str = "tensor") -> list[float]:
    """Exact k-th smallest |w| of a tensor of any size and float dtype: non-negative floats order
    like their bit patterns, so one pass (``chunk`` elements at a time, so a bf16 tensor is never
    copied whole) counts |w| per bucket of its high 16 bits and keeps the members of the buckets a
    small random sample says hold the wanted ranks; a second pass runs only when the sample
    missed a bucket. The members of a rank's bucket are then sorted."""
    n = w.numel()
    ranks = _ranks(n, ratios)
    inner = sorted({k for k in ranks if 0 < k < n})
    chosen = _guess_buckets(w, inner) if inner else torch.zeros(HIGH, dtype=torch.bool)
    counts = torch.zeros(HIGH, dtype=torch.int64)
    members: list[torch.Tensor] = []
    for a in _flat_abs_chunks(w, chunk):
        hi = a.view(torch.int32) >> 16
        counts += torch.bincount(hi, minlength=HIGH)
        members.append(a[chosen[hi]])
    if int(counts[NON_FINITE:].sum()):
        raise ValueError(f"{name} holds non-finite weights (NaN/inf): no magnitude threshold is "
                         "meaningful; fix the checkpoint before masking it")
    cum = torch.cumsum(counts, 0)
    bucket = {k: int(torch.searchsorted(cum, torch.tensor(k), right=True)) for k in inner}  # holding rank k
    missed = torch.zeros(HIGH, dtype=torch.bool)
    for b in bucket.values():
        missed[b] = not bool(chosen[b])
    if missed.any():  # the sample's guess missed: a second pass for those buckets only
        members += [a[missed[a.view(torch.int32) >> 16]] for a in _flat_abs_chunks(w, chunk)]
    pool = torch.cat(members) if members else torch.zeros(0)
    pool_hi = pool.view(torch.int32) >> 16
    out = []
    for k in ranks:
        if k <= 0:
            out.append(0.0)
        elif k >= n:
            out.append(float("inf"))
        else:
            b = bucket[k]
            s = torch.sort(pool[pool_hi == b]).values
            out.append(float(s[k - (int(cum[b - 1]) if b > 0 else 0)]))
    return out


def tensor_thresholds(w: torch.Tensor, ratios: Sequence[float], name: str = "tensor") -> list[float]:
    """lambda_r for each ratio: masking keeps |w| >= lambda_r (0 keeps all, inf zeroes all)."""
    if w.numel() > SORT_LIMIT:
        return _thresholds_by_radix(w, ratios, name=name)
    a = w.detach().abs().float().reshape(-1).cpu()
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} holds non-finite weights (NaN/inf): no magnitude threshold is "
                         "meaningful; fix the checkpoint before masking it")
    return _thresholds_by_sort(a, ratios)


def apply_mask(w: torch.Tensor, threshold: float, chunk: int = 1 << 22) -> int:
    """Zero, in place, the entries of ``w`` with |w| < threshold, ``chunk`` elements at a time
    (elementwise, so the result does not depend on the chunking); returns how many were zeroed."""
    flat = w.view(-1)
    zeroed = 0
    for start in range(0, flat.numel(), chunk):
        part = flat[start:start + chunk]
        drop = part.abs() < threshold
        zeroed += int(drop.sum())
        part[drop] = 0
    return zeroed


@dataclass
class MaskPlan:
    """Per-tensor thresholds for every ratio of a schedule, from one pass over each tensor."""

    ratios: tuple[float, ...]
    thresholds: dict[str, list[float]] = field(default_factory=dict)

    def threshold(self, name: str, ratio: float) -> float:
        for r, t in zip(self.ratios, self.thresholds[name]):
            if abs(r - ratio) < 1e-9:
                return t
        raise KeyError(f"ratio {ratio} is not in this plan's ratios {self.ratios}")


def checked_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """A plan's ratios: distinct, sorted, each in [0, 1]."""
    ratios = tuple(sorted(set(float(r) for r in ratios)))
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"mask ratio {r} is outside [0, 1]")
    return ratios


def plan_masks(model: nn.Module, ratios: Sequence[float], spec: MaskSpec | None = None) -> MaskPlan:
    ratios = checked_ratios(ratios)
    return MaskPlan(ratios, {n: tensor_thresholds(p, ratios, n)
                             for n, p in masked_parameters(model, spec).items()})


@contextmanager
def masked(model: nn.Module, ratio: float, plan: MaskPlan | None = None,
           spec: MaskSpec | None = None) -> Iterator[dict[str, int]]:
    """Apply the mask for ``ratio`` in place; on exit restore the original weights bit-exactly.
    Only the zeroed entries (and a boolean mask) are kept aside, not a copy of the model.
    Yields the number of zeroed entries per tensor."""
    if ratio <= 0:  # nothing to mask: no plan, no pass over the weights
        yield {}
        return
    params = masked_parameters(model, spec)
    plan = plan or plan_masks(model, [ratio], spec)
    saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    zeroed: dict[str, int] = {}
    try:
        with torch.no_grad():
            for name, p in params.items():
                drop = p.abs() < plan.threshold(name, ratio)
                saved[name] = (drop, p[drop].clone())
                p[drop] = 0
                zeroed[name] = int(drop.sum())
        yield zeroed
    finally:
        with torch.no_grad():
            for name, (drop, values) in saved.items():
                params[name][drop] = values


def masked_state_dict(model: nn.Module, ratio: float, plan: MaskPlan | None = None,
                      spec: MaskSpec | None = None) -> dict[str, torch.Tensor]:
    """A full state dict with the mask for ``ratio`` applied, for engines that load weights."""
    with masked(model, ratio, plan, spec):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
