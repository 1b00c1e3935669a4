"""Masking straight from a checkpoint's safetensors files, tensor by tensor, without loading the
model: the mask plan of a whole schedule in one pass over the weights, and a masked copy of the
checkpoint for engines that load weights from a folder (vLLM).

Tensors are read with plain positioned reads (no memory map, so nothing but the tensor being
worked on is resident); a masked tensor is zeroed in place in its own dtype and written back at
its own offset, and every other byte is copied as it is: the output's headers, shard layout and
unmasked tensors are the source's, byte for byte. The masked tensors are bit-identical to what
``gendata.masking.masked`` leaves in a model loaded from the same folder (same thresholds, same
elementwise ``|w| < lambda`` test, see ``tests/gendata/test_checkpoint_masking.py``).

Which tensors are masked is decided on the model's own module structure (``masked_parameters``
on a skeleton built on the meta device: no memory), and checkpoint keys are mapped to parameter
names with transformers' own key conversion (checkpoints keep their legacy key layout).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gendata.masking import MaskPlan, MaskSpec, apply_mask, checked_ratios, masked_parameters, tensor_thresholds
from schemas.errors import MastersError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
COPY_CHUNK = 4 << 20  # bytes copied at a time for tensors that are not masked


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies in a safetensors file."""

    file: Path
    key: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


def read_header(path: Path) -> tuple[bytes, dict]:
    """The raw header bytes (length prefix included) and the parsed header of a safetensors file."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise MastersError(f"{path}: not a safetensors file (shorter than its header length)")
        (n,) = struct.unpack("<Q", prefix)
        raw = f.read(n)
    try:
        return prefix + raw, json.loads(raw)
    except ValueError:
        raise MastersError(f"{path}: not a safetensors file (its header is not JSON)") from None


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files, in the order of its index (or the single file)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MastersError(f"{folder}: no *.safetensors weights; masking from disk reads safetensors "
                           "(re-save the checkpoint with save_pretrained, which writes them)")
    return files


def file_tensors(path: Path) -> tuple[bytes, list[StoredTensor]]:
    """The raw header of one safetensors file and its tensors, in the order of their bytes."""
    raw, header = read_header(path)
    tensors = [StoredTensor(path, key, e["dtype"], tuple(e["shape"]), len(raw) + e["data_offsets"][0],
                            len(raw) + e["data_offsets"][1]) for key, e in header.items() if key != "__metadata__"]
    return raw, sorted(tensors, key=lambda t: t.begin)


def stored_tensors(folder: Path) -> dict[str, StoredTensor]:
    """Every tensor of the checkpoint by its key in the files."""
    return {t.key: t for path in weight_files(folder) for t in file_tensors(path)[1]}


def read_tensor(t: StoredTensor) -> torch.Tensor:
    """One tensor, read into memory of its own (writable)."""
    if t.dtype not in DTYPES:
        raise MastersError(f"{t.file}: tensor {t.key} has dtype {t.dtype}, which masking cannot read")
    buf = bytearray(t.end - t.begin)
    with open(t.file, "rb") as f:
        f.seek(t.begin)
        if f.readinto(buf) != len(buf):
            raise MastersError(f"{t.file}: truncated (tensor {t.key} ends past the end of the file); "
                               "copy the checkpoint again")
    if not buf:
        return torch.empty(t.shape, dtype=DTYPES[t.dtype])
    return torch.frombuffer(buf, dtype=DTYPES[t.dtype]).view(t.shape)


def skeleton(folder: Path):
    """The model of ``folder`` on the meta device (its structure, no weights, no memory)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def parameter_keys(model, keys: Sequence[str]) -> dict[str, str]:
    """Parameter name -> checkpoint key, by transformers' own key conversion of ``model``."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, rename_source_key
    except ImportError:  # a transformers without key conversion: keys are parameter names
        return {k: k for k in keys}
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta = model.state_dict()
    out = {}
    for key in keys:
        name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, meta)
        if converted is None:  # a converter (fusing, splitting...) has no one-tensor counterpart
            out[name] = key
    return out


def masked_tensors(folder: Path, spec: MaskSpec | None) -> dict[str, StoredTensor]:
    """Parameter name -> stored tensor, for every tensor the mask touches."""
    tensors = stored_tensors(folder)
    model = skeleton(folder)
    keys = parameter_keys(model, list(tensors))
    out = {}
    for name in masked_parameters(model, spec):
        if name not in keys:
            raise MastersError(f"{folder}: the masked parameter {name} has no tensor of its own in the "
                               "safetensors files (a fused or renamed layout); mask a model loaded in "
                               "memory instead (backend: transformers)")
        out[name] = tensors[keys[name]]
    return out


def plan_checkpoint_masks(folder, ratios: Sequence[float], spec: MaskSpec | None = None,
                          progress: bool = False) -> MaskPlan:
    """The thresholds of every ratio for every masked tensor, one tensor in memory at a time;
    equal to ``plan_masks`` on the model loaded from ``folder``."""
    folder = Path(folder)
    ratios = checked_ratios(ratios)
    chosen = masked_tensors(folder, spec)
    plan = MaskPlan(ratios)
    for name, t in tqdm(chosen.items(), desc="mask thresholds", unit="tensor", disable=not progress):
        plan.thresholds[name] = tensor_thresholds(read_tensor(t), ratios, f"{t.file.name}:{t.key}")
    return plan


def _copy_range(src, dst, n: int) -> None:
    while n > 0:
        chunk = src.read(min(n, COPY_CHUNK))
        if not chunk:
            raise MastersError(f"{src.name}: truncated (the header promises more bytes than the file holds); "
                               "copy the checkpoint again")
        dst.write(chunk)
        n -= len(chunk)


def _write_masked_file(path: Path, out: Path, masked_here: dict[str, float], bar) -> None:
    """Copy one safetensors file to ``out``, the tensors in ``masked_here`` (key -> threshold)
    zeroed below their threshold. Written to a temporary name, renamed when complete."""
    raw, tensors = file_tensors(path)
    tmp = out.with_name(out.name + ".partial")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(raw)
        src.seek(len(raw))
        pos = len(raw)
        for t in tensors:
            _copy_range(src, dst, t.begin - pos)  # any padding between tensors, as it is
            if t.key in masked_here:
                w = read_tensor(t)
                apply_mask(w, masked_here[t.key])
                if w.numel():
                    dst.write(w.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
                src.seek(t.end)
            else:
                _copy_range(src, dst, t.end - t.begin)
            pos = t.end
            bar.update(1)
        shutil.copyfileobj(src, dst)  # anything after the last tensor
    tmp.replace(out)


def export_masked_checkpoint(src, ratio: float, out, spec: MaskSpec | None = None,
                             plan: MaskPlan | None = None, progress: bool = False) -> Path:
    """Write a copy of checkpoint ``src`` with the mask for ``ratio`` applied (weights, config,
    processor, everything else copied), streamed tensor by tensor from its safetensors files:
    peak memory is about the largest masked tensor. ``plan``: thresholds already computed (e.g.
    a whole schedule's, from ``plan_checkpoint_masks``)."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise MastersError(f"{out}: the masked copy must not overwrite its source checkpoint")
    chosen = masked_tensors(src, spec)
    if ratio > 0 and (plan is None or any(n not in plan.thresholds for n in chosen)):
        plan = plan_checkpoint_masks(src, [ratio], spec, progress)
    by_file: dict[Path, dict[str, float]] = {}
    if ratio > 0:
        for name, t in chosen.items():
            by_file.setdefault(t.file, {})[t.key] = plan.threshold(name, ratio)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(stored_tensors(src)), desc=f"masked export r={ratio:g}", unit="tensor",
              disable=not progress) as bar:
        for f in weight_files(src):
            _write_masked_file(f, out / f.name, by_file.get(f, {}), bar)
    for f in src.iterdir():  # config, processor, tokenizer, chat template, shims, the index
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    return out

