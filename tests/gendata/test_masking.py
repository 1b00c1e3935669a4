"""Per-layer magnitude masks on a real tiny checkpoint: equal to a reference per tensor, restored
bit-exactly, thresholds for many ratios from one pass, large tensors handled."""

import pytest
import torch
from torch import nn

import gendata.masking as masking
from gendata.hf_generate import load_vlm
from gendata.checkpoint_masking import export_masked_checkpoint
from gendata.masking import (MaskSpec, masked, masked_parameters, masked_state_dict, plan_masks,
                             tensor_thresholds)
from gendata.schedule import MaskSchedule

RATIOS = [0.0, 0.05, 0.1, 0.15, 0.2]


@pytest.fixture(scope="module")
def model(tiny_checkpoints):
    return load_vlm(tiny_checkpoints["qwen2_vl"])[0]


def reference_mask(w: torch.Tensor, r: float) -> torch.Tensor:
    """Independent reference: zero exactly the round(r*n) smallest |w| (argsort)."""
    flat = w.detach().abs().reshape(-1)
    k = round(r * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    return keep.reshape(w.shape)


def test_default_selection_is_linear_weights_only(model):
    names = masked_parameters(model)
    assert names and all(n.endswith(".weight") for n in names)
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert all(id(p) in linear for p in names.values())
    assert not any("embed" in n or "norm" in n or "lm_head" in n for n in names)
    assert any(n.startswith("model.visual") for n in names) and any("language_model" in n for n in names)


@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5])
def test_masks_equal_reference_per_tensor_and_restore_bit_exactly(model, ratio):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = masked_parameters(model)
    plan = plan_masks(model, RATIOS + [0.5])
    with masked(model, ratio, plan) as zeroed:
        for name, p in params.items():
            ref = reference_mask(before[name], ratio)
            assert torch.equal(p != 0, ref & (before[name] != 0)), name
            assert zeroed[name] == round(ratio * p.numel())  # a fraction r of that tensor, per layer
        untouched = [k for k in before if k not in params]
        assert all(torch.equal(model.state_dict()[k], before[k]) for k in untouched)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # bit-exact restore


def test_restore_happens_on_error(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        with masked(model, 0.3):
            raise RuntimeError("boom")
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)


def test_radix_selection_equals_sort(monkeypatch):
    w = torch.randn(300_000) * torch.rand(300_000) ** 3
    w[:5000] = 0.0  # ties and zeros
    exact = masking._thresholds_by_sort(w.abs(), RATIOS + [1.0])
    assert tensor_thresholds(w, RATIOS + [1.0]) == exact  # 300k elements: the radix path
    small = torch.randn(37)
    assert masking._thresholds_by_radix(small.abs(), [0.3]) == masking._thresholds_by_sort(small.abs(), [0.3])
    monkeypatch.setattr(masking, "_thresholds_by_radix", None)
    monkeypatch.setattr(masking, "SORT_LIMIT", 10**9)
    assert tensor_thresholds(w, RATIOS + [1.0]) == exact  # and the sort path agrees
    assert exact[0] == 0.0 and exact[-1] == float("inf")


def test_radix_chunks_and_refuses_non_finite():
    w = torch.randn(50_000)
    assert masking._thresholds_by_radix(w.abs(), RATIOS, chunk=1024) == masking._thresholds_by_sort(w.abs(), RATIOS)
    w[7] = float("nan")
    with pytest.raises(ValueError, match="layer.x holds non-finite weights"):
        tensor_thresholds(w, [0.1], "layer.x")


def test_ratio_zero_touches_nothing(model, monkeypatch):
    monkeypatch.setattr(masking, "plan_masks", None)  # no plan may be computed for ratio 0
    with masked(model, 0.0) as zeroed:
        assert zeroed == {}


def test_custom_spec_and_state_dict_export(model, tiny_checkpoints, tmp_path):
    spec = MaskSpec(include=("*mlp*",))
    chosen = masked_parameters(model, spec)
    assert chosen and all("mlp" in n for n in chosen)
    sd = masked_state_dict(model, 0.2, spec=spec)
    name = next(iter(chosen))
    assert (sd[name] == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert (model.state_dict()[name] == 0).float().mean().item() < 0.01  # the model is untouched
    out = export_masked_checkpoint(tiny_checkpoints["qwen2_vl"], 0.2, tmp_path / "masked", spec=spec)
    reloaded, _ = load_vlm(out)
    params = dict(reloaded.named_parameters())
    assert (params[name] == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    attn = next(n for n in params if "self_attn.q_proj.weight" in n)  # outside the spec: intact
    assert (params[attn] == 0).float().mean().item() < 0.01
    assert params[name].dtype == torch.float32  # the checkpoint's own dtype is kept
    assert (out / "processor_shims.py").exists() and (out / "tokenizer.json").exists()


def test_paper_schedule():
    assert MaskSchedule(r_max=0.2, step=0.05, iterations=5).ratios() == [0.2, 0.15, 0.1, 0.05, 0.0]
    assert MaskSchedule(r_max=0.4, step=0.05, iterations=9).ratios()[0] == 0.4
    assert MaskSchedule(kind="constant", r_max=0.1, iterations=3).ratios() == [0.1] * 3
    assert MaskSchedule(kind="linear", r_max=0.3, iterations=4).ratios() == [0.3, 0.2, 0.1, 0.0]
    with pytest.raises(ValueError, match="must divide"):
        MaskSchedule(r_max=0.2, step=0.03)
