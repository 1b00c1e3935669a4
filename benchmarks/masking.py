"""Mask thresholds for every ratio of a schedule: masters-distill (one pass per tensor, all
ratios) vs torch.nn.utils.prune.l1_unstructured (one pruning pass per tensor and ratio), and vs
one plain read pass over the weights (the floor: |w| summed once). Same model, same process.

Then the same from the checkpoint's safetensors files (``gendata/checkpoint_masking.py``):
thresholds against one plain read pass of the same tensors from the files, and the peak memory
of the streamed plan and masked export (in a child process, after one warm-up run: its high-water
RSS, VmHWM reset through /proc/self/clear_refs, above its RSS before the measured run)
against the largest tensor and the model's size.

    python benchmarks/masking.py [--hidden 1024 --layers 8 --dtype float32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.utils import prune

from gendata.checkpoint_masking import masked_tensors, plan_checkpoint_masks, read_tensor, stored_tensors
from gendata.masking import masked_parameters, plan_masks
from gendata.schedule import MaskSchedule


def build(hidden: int, layers: int):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    heads = max(4, hidden // 64)
    half = hidden // heads // 2
    hw = (half - half // 4) // 2
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=32000, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [half - 2 * hw, hw, hw]}),
        vision_config=dict(depth=4, embed_dim=hidden // 2, hidden_size=hidden, num_heads=4, mlp_ratio=4))
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(cfg)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    model = build(args.hidden, args.layers).to(getattr(torch, args.dtype))
    params = masked_parameters(model)
    n = sum(p.numel() for p in params.values())
    ratios = [r for r in MaskSchedule().ratios() if r > 0]  # 0.2, 0.15, 0.1, 0.05
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, {len(params)} masked "
          f"tensors ({n:,} weights); ratios {ratios}")

    def read_pass() -> float:
        with torch.no_grad():
            return sum(float(p.abs().sum()) for p in params.values())

    t_read = min(_timed(read_pass)[1] for _ in range(3))
    floor = read_pass()
    plan, t_ours = _timed(lambda: plan_masks(model, ratios))

    original = {name: p.detach().clone() for name, p in params.items()}
    t_prune = 0.0
    mismatches = explained = 0
    for r in ratios:
        t0 = time.perf_counter()
        pruned = {}
        for name in params:
            module = model.get_submodule(name.rsplit(".", 1)[0])
            prune.l1_unstructured(module, "weight", amount=r)
            pruned[name] = int((module.weight_mask == 0).sum())
            prune.remove(module, "weight")
        t_prune += time.perf_counter() - t0
        with torch.no_grad():  # put the original weights back (not timed) and compare the masks
            for name, p in masked_parameters(model).items():
                p.copy_(original[name])
                lam = plan.threshold(name, r)
                ours = int((original[name].abs() < lam).sum())
                if ours != pruned[name]:
                    mismatches += 1
                    ties = int((original[name].abs() == lam).sum())  # |w| tied at the threshold
                    explained += ours < pruned[name] <= ours + ties
    assert floor > 0
    print(f"zeroed counts vs prune's (which zeroes exactly round(r*n)): {mismatches} of "
          f"{len(params) * len(ratios)} differ, {explained} of them by |w| tied at the threshold "
          "(kept by |w| >= lambda_r)")
    print(f"one read pass over the weights     : {t_read:7.3f} s")
    print(f"masters plan_masks (all ratios)    : {t_ours:7.3f} s  = {t_ours / t_read:5.1f}x the read pass")
    print(f"prune.l1_unstructured (per ratio)  : {t_prune:7.3f} s  = {t_prune / t_read:5.1f}x the read pass")
    print(f"speed-up over per-ratio pruning    : {t_prune / t_ours:5.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        streamed(model, Path(tmp), ratios, plan)


PEAK = """
import sys
from pathlib import Path
from gendata.checkpoint_masking import export_masked_checkpoint, plan_checkpoint_masks
src, out = Path(sys.argv[1]), Path(sys.argv[2])
def status(key):  # this process's own memory, in bytes
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def once(folder):
    export_masked_checkpoint(src, 0.2, folder, plan=plan_checkpoint_masks(src, [0.2, 0.15, 0.1, 0.05]))
def in_memory(folder):  # the baseline: load the model, mask it in place, save it
    from transformers import AutoModelForImageTextToText
    from gendata.masking import masked
    model = AutoModelForImageTextToText.from_pretrained(src, dtype="auto")
    with masked(model, 0.2):
        model.save_pretrained(folder)
if sys.argv[3] == "in-memory":
    once = in_memory
once(out / "warm-up")  # imports, the skeleton's set-up and the first use of each kernel's code pages
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM (the high-water mark) to the RSS of now
before = status("VmRSS")
once(out / "measured")
print(before, status("VmHWM"))
"""


def streamed(model, tmp: Path, ratios, plan) -> None:
    src = tmp / "src"
    model.save_pretrained(src)
    tensors = stored_tensors(src)
    names = {t.key for t in tensors.values()}
    params = masked_parameters(model)
    chosen = masked_tensors(src, None)

    def read_pass() -> float:
        return sum(float(read_tensor(t).abs().sum()) for t in chosen.values())

    read_pass()  # the files are in the page cache for both
    t_read = min(_timed(read_pass)[1] for _ in range(3))
    from_files, t_plan = _timed(lambda: plan_checkpoint_masks(src, ratios))
    same = from_files.thresholds == plan.thresholds
    size = sum(t.end - t.begin for t in tensors.values())
    largest = max(t.end - t.begin for t in tensors.values())
    largest_masked = max(t.end - t.begin for t in chosen.values())
    peaks = {}
    for how in ("streamed", "in-memory"):
        res = subprocess.run([sys.executable, "-c", PEAK, str(src), str(tmp / how), how], capture_output=True,
                             text=True, check=True)
        peaks[how] = tuple(map(int, res.stdout.strip().splitlines()[-1].split()))  # (libraries may print above)
    before, peak = peaks["streamed"]
    print(f"\nfrom the safetensors files ({len(names)} tensors, {size / 2**20:,.0f} MiB; largest "
          f"{largest / 2**20:,.1f} MiB, largest masked {largest_masked / 2**20:,.1f} MiB; {len(params)} masked):")
    print(f"thresholds equal the in-memory plan's : {same}")
    print(f"one read pass of the masked tensors   : {t_read:7.3f} s")
    print(f"plan_checkpoint_masks (all ratios)    : {t_plan:7.3f} s  = {t_plan / t_read:5.1f}x the read pass")
    print(f"streamed plan + export, peak memory   : {(peak - before) / 2**20:,.1f} MiB above the process's "
          f"{before / 2**20:,.0f} MiB (imports, code) = {(peak - before) / largest:4.2f}x the largest tensor, "
          f"{(peak - before) / largest_masked:4.2f}x the largest masked tensor, "
          f"{(peak - before) / size:4.2f}x the model")
    b0, p0 = peaks["in-memory"]
    print(f"in-memory export (load, mask, save)   : {(p0 - b0) / 2**20:,.1f} MiB = {(p0 - b0) / size:4.2f}x the model "
          f"({(p0 - b0) / max(peak - before, 1):.0f}x the streamed export's peak)")


if __name__ == "__main__":
    main()
