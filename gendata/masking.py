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
selection on the bit patterns of |w| (a histogram of the high 16 bits in one pass, then a sort of
only the candidates in the few buckets that hold the wanted ranks), chunked so no tensor is too
large for it and about 3x faster than a sort on CPU.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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


def _thresholds_by_radix(a: torch.Tensor, ratios: Sequence[float], chunk: int = 1 << 22) -> list[float]:  # noqa: C901
    """Exact k-th smallest values of a non-negative float32 tensor of any size: non-negative
    floats order like their bit patterns, so bucket by the high 16 bits (one pass), then sort the
    members of the few buckets that hold the wanted ranks (second pass)."""
    flat = a.reshape(-1)
    n = flat.numel()
    counts = torch.zeros(1 << 16, dtype=torch.int64)
    for start in range(0, n, chunk):
        bits = flat[start:start + chunk].float().view(torch.int32)
        counts += torch.bincount((bits >> 16).long(), minlength=1 << 16)
    cum = torch.cumsum(counts, 0)
    wanted = {}
    for k in _ranks(n, ratios):
        if 0 < k < n:
            b = int(torch.searchsorted(cum, torch.tensor(k), right=True))  # bucket holding rank k
            wanted.setdefault(b, []).append(k - (int(cum[b - 1]) if b > 0 else 0))
    members: dict[int, list[torch.Tensor]] = {b: [] for b in wanted}
    for start in range(0, n, chunk):
        part = flat[start:start + chunk].float()
        hi = part.view(torch.int32) >> 16
        for b in wanted:
            members[b].append(part[hi == b])
    value: dict[tuple[int, int], float] = {}
    for b, offsets in wanted.items():
        s = torch.sort(torch.cat(members[b])).values
        for off in offsets:
            value[(b, off)] = float(s[off])
    out = []
    for k in _ranks(n, ratios):
        if k <= 0:
            out.append(0.0)
        elif k >= n:
            out.append(float("inf"))
        else:
            b = int(torch.searchsorted(cum, torch.tensor(k), right=True))
            out.append(value[(b, k - (int(cum[b - 1]) if b > 0 else 0))])
    return out


def tensor_thresholds(w: torch.Tensor, ratios: Sequence[float], name: str = "tensor") -> list[float]:
    """lambda_r for each ratio: masking keeps |w| >= lambda_r (0 keeps all, inf zeroes all)."""
    a = w.detach().abs().float().reshape(-1).cpu()
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} holds non-finite weights (NaN/inf): no magnitude threshold is "
                         "meaningful; fix the checkpoint before masking it")
    return _thresholds_by_sort(a, ratios) if a.numel() <= SORT_LIMIT else _thresholds_by_radix(a, ratios)


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


def plan_masks(model: nn.Module, ratios: Sequence[float], spec: MaskSpec | None = None) -> MaskPlan:
    ratios = tuple(sorted(set(float(r) for r in ratios)))
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"mask ratio {r} is outside [0, 1]")
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


def export_masked_checkpoint(src, ratio: float, out, spec: MaskSpec | None = None) -> Path:
    """Write a copy of checkpoint ``src`` with the mask for ``ratio`` applied (weights, config,
    processor), for engines that load weights from a folder (vLLM). The weights keep their
    dtype; the model is held in memory once (streaming shard by shard is not done yet)."""
    import shutil

    from transformers import AutoModelForImageTextToText

    src, out = Path(src), Path(out)
    model = AutoModelForImageTextToText.from_pretrained(src, dtype="auto")
    out.mkdir(parents=True, exist_ok=True)
    with masked(model, ratio, spec=spec):
        model.save_pretrained(out)
    for f in src.iterdir():  # processor, tokenizer, chat template, shims: everything but weights
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")) and f.name not in (
                "config.json", "model.safetensors.index.json") and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out
