"""Masking straight from safetensors files: the plan equals the in-memory one, the masked export
equals ``masked()`` on a loaded model bit for bit (fp32 and bf16, one file and sharded), every
other byte is the source's, and the model is never loaded."""

import shutil

import pytest
import torch
from transformers import AutoModelForImageTextToText

import gendata.masking as masking
from gendata.checkpoint_masking import (export_masked_checkpoint, parameter_keys, plan_checkpoint_masks,
                                        read_header, read_tensor, stored_tensors, weight_files)
from gendata.masking import MaskSpec, masked, plan_masks
from schemas.errors import MastersError

RATIOS = [0.05, 0.1, 0.2]


@pytest.fixture(scope="module", params=["float32", "bfloat16-sharded"])
def checkpoint(request, tiny_checkpoints, tmp_path_factory):
    """The tiny Qwen2-VL as it is (one fp32 file), or re-saved in bf16 across several shards."""
    src = tiny_checkpoints["qwen2_vl"]
    if request.param == "float32":
        return src
    out = tmp_path_factory.mktemp("bf16") / "ckpt"
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size="300KB")
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    assert len(weight_files(out)) > 1
    return out


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def test_plan_from_files_equals_plan_in_memory(checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype="auto")
    assert plan_checkpoint_masks(checkpoint, RATIOS).thresholds == plan_masks(model, RATIOS).thresholds


@pytest.mark.parametrize("spec", [None, MaskSpec(include=("*mlp*",))])
def test_streamed_export_is_bit_identical_to_masked(checkpoint, tmp_path, monkeypatch, spec):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype="auto")
    plan = plan_checkpoint_masks(checkpoint, RATIOS, spec)
    with monkeypatch.context() as m:  # the export never loads the model
        m.setattr(AutoModelForImageTextToText, "from_pretrained", None)
        out = export_masked_checkpoint(checkpoint, 0.2, tmp_path / "masked", spec=spec, plan=plan)
    with masked(model, 0.2, plan, spec) as zeroed:
        expected = {n: p.detach().clone() for n, p in model.state_dict().items()}
    written = stored_tensors(out)
    keys = parameter_keys(model, list(written))
    assert set(zeroed) <= set(keys)
    for name, value in expected.items():
        if name not in keys:  # the tied LM head is not stored
            continue
        got = read_tensor(written[keys[name]])
        assert got.dtype == value.dtype and torch.equal(bits(got), bits(value)), name
    source = stored_tensors(checkpoint)
    assert {k: (t.dtype, t.shape) for k, t in source.items()} == {k: (t.dtype, t.shape) for k, t in written.items()}
    for f in weight_files(checkpoint):  # headers (layout, metadata) are the source's, byte for byte
        assert read_header(f)[0] == read_header(out / f.name)[0]
    untouched = [k for k in source if k not in {keys[n] for n in zeroed}]
    assert untouched and all(torch.equal(bits(read_tensor(source[k])), bits(read_tensor(written[k])))
                             for k in untouched if source[k].dtype in ("F32", "BF16"))
    assert sum(zeroed.values()) > 0
    assert {f.name for f in checkpoint.iterdir()} == {f.name for f in out.iterdir()}
    reloaded = AutoModelForImageTextToText.from_pretrained(out, dtype="auto")  # and it loads as a checkpoint
    assert all(torch.equal(bits(p), bits(expected[n])) for n, p in reloaded.state_dict().items())


def test_export_refuses_a_folder_without_safetensors(tmp_path, tiny_checkpoints):
    src = tmp_path / "bin-only"
    src.mkdir()
    (src / "config.json").write_text((tiny_checkpoints["qwen2_vl"] / "config.json").read_text())
    with pytest.raises(MastersError, match="no \\*.safetensors weights"):
        export_masked_checkpoint(src, 0.1, tmp_path / "out")
    with pytest.raises(MastersError, match="must not overwrite"):
        export_masked_checkpoint(tiny_checkpoints["qwen2_vl"], 0.1, tiny_checkpoints["qwen2_vl"])


def test_a_truncated_file_is_refused_and_leaves_no_output(tmp_path, tiny_checkpoints):
    src = tmp_path / "src"
    shutil.copytree(tiny_checkpoints["qwen2_vl"], src)
    weights = src / "model.safetensors"
    data = weights.read_bytes()
    header_end = len(read_header(weights)[0])
    weights.write_bytes(data[:header_end + (len(data) - header_end) // 2])
    with pytest.raises(MastersError, match="model.safetensors: truncated"):
        export_masked_checkpoint(src, 0.1, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_radix_selection_when_the_sample_misses(monkeypatch):
    """The sample only guesses where the ranks lie: a guess that misses costs a second pass, not
    a wrong threshold; bf16 tensors are selected on their own values, chunk by chunk."""
    w = torch.randn(200_000) * torch.rand(200_000) ** 2
    exact = masking._thresholds_by_sort(w.abs(), RATIOS)
    monkeypatch.setattr(masking, "_guess_buckets", lambda w, ranks: torch.zeros(masking.HIGH, dtype=torch.bool))
    assert masking._thresholds_by_radix(w, RATIOS, chunk=4096) == exact
    monkeypatch.undo()
    b = w.to(torch.bfloat16)
    assert masking._thresholds_by_radix(b, RATIOS, chunk=4096) == masking._thresholds_by_sort(b.float().abs(), RATIOS)


def test_one_threshold_pass_serves_the_whole_schedule(tiny_checkpoints, monkeypatch):
    """The process's model cache computes a teacher's thresholds for every ratio the run masks it
    at in one pass (in memory or from its files), and keeps them when the models are dropped."""
    from gendata import checkpoint_masking
    from masters.stages.models import ModelCache

    passes = {"memory": 0, "files": 0}
    real_memory, real_files = masking.plan_masks, checkpoint_masking.plan_checkpoint_masks

    def count(kind, real):
        def wrapped(*args, **kwargs):
            passes[kind] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(masking, "plan_masks", count("memory", real_memory))
    monkeypatch.setattr(checkpoint_masking, "plan_checkpoint_masks", count("files", real_files))
    cache, path, schedule = ModelCache(), tiny_checkpoints["qwen2_vl"], (0.2, 0.15, 0.1, 0.05)
    first = cache.mask_plan(path, 0.2, ratios=schedule)
    cache.clear()  # the loop drops the models after each iteration's Gen-Data
    later = [cache.mask_plan(path, r, ratios=schedule) for r in (0.15, 0.1, 0.05)]
    assert passes["memory"] == 1 and all(p is first for p in later) and first.ratios == tuple(sorted(schedule))
    assert cache.mask_plan(path, 0.3) is not first and passes["memory"] == 2  # a ratio outside it: one more pass
    files = [cache.checkpoint_plan(path, r, ratios=schedule) for r in schedule]
    assert passes["files"] == 1 and files[0].thresholds == {n: t for n, t in first.thresholds.items()}
