"""Golden values for each term of the training objective."""

import math

import pytest
import torch

from trainer.losses import (kl_to_reference, masters_loss, policy_term, sequence_mean,
                            topk_tail_jsd, topk_tail_jsd_from_logps)


def test_policy_term_golden():
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.2]]))
    old = torch.log(torch.tensor([[0.5, 0.25], [0.2, 0.4]]))
    adv = torch.tensor([1.0, -2.0])
    out = policy_term(logps, old, adv, 0.2, 0.2)
    # seq 0: ratios 1 and 2 (clipped to 1.2) with A=1 -> -1, -1.2
    # seq 1: ratios 1 and 0.5 (clipped to 0.8) with A=-2 -> min(-1,-1)=... -> +2, +1.6
    assert out.flatten().tolist() == pytest.approx([-1.0, -1.2, 2.0, 1.6])


def test_ratio_one_regime_is_plain_advantage_weighting():
    logps = torch.randn(3, 4)
    adv = torch.tensor([0.5, -1.0, 2.0])
    out = policy_term(logps, logps.detach(), adv)
    assert torch.allclose(out, -adv.unsqueeze(-1).expand(3, 4))


def test_kl_k3_golden():
    logps = torch.tensor([[math.log(0.5), math.log(0.25)]])
    ref = torch.tensor([[math.log(0.5), math.log(0.5)]])
    d = math.log(2)
    assert kl_to_reference(logps, ref).tolist()[0] == pytest.approx([0.0, 2 - d - 1])


def test_sequence_mean_masks_padding():
    x = torch.tensor([[1.0, 3.0, 100.0], [2.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert sequence_mean(x, mask).item() == pytest.approx((2.0 + 2.0) / 2)


def test_topk_tail_jsd_golden():
    # vocabulary of 4; teacher top-2 = tokens 0 (p=.5) and 1 (p=.3) -> tail .2
    topk_ids = torch.tensor([[[0, 1]]])
    topk_logps = torch.log(torch.tensor([[[0.5, 0.3]]]))
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])  # the student: uniform -> buckets .25 .25 .5
    logits = q.log().view(1, 1, 4).clone().requires_grad_(True)
    got = topk_tail_jsd(logits, topk_ids, topk_logps)
    p, qb = [0.5, 0.3, 0.2], [0.25, 0.25, 0.5]
    m = [(a + b) / 2 for a, b in zip(p, qb)]
    want = 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m)) + 0.5 * sum(b * math.log(b / c) for b, c in zip(qb, m))
    assert got.item() == pytest.approx(want, abs=1e-6)
    got.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # differentiable in the student


def test_jsd_from_topk_logps_equals_the_logits_form():
    logits = torch.randn(2, 3, 9)
    teacher = torch.randn(2, 3, 9).log_softmax(-1)
    top_v, top_i = teacher.topk(3, -1)
    student_topk = logits.log_softmax(-1).gather(-1, top_i)
    assert torch.allclose(topk_tail_jsd_from_logps(student_topk, top_v), topk_tail_jsd(logits, top_i, top_v))


def test_topk_tail_jsd_is_zero_when_the_student_is_the_teacher():
    logits = torch.randn(2, 3, 11)
    top_v, top_i = logits.log_softmax(-1).topk(4, -1)
    assert torch.allclose(topk_tail_jsd(logits, top_i, top_v), torch.zeros(2, 3), atol=1e-6)


def test_masters_loss_combines_the_terms():
    logps = torch.log(torch.tensor([[0.5, 0.5]]))
    old = ref = torch.log(torch.tensor([[0.5, 0.25]]))
    adv = torch.tensor([1.0])
    mask = torch.ones(1, 2)
    student = torch.log(torch.full((1, 2, 2), 0.25))  # a uniform student over 4 tokens
    teacher = torch.log(torch.tensor([[[0.5, 0.3], [0.5, 0.3]]]))
    loss, m = masters_loss(logps, old, ref, adv, mask, student_topk_logps=student, teacher_topk_logps=teacher,
                           beta=0.1, jsd_weight=2.0)
    assert m["policy"] == pytest.approx((-1.0 - 1.2) / 2)
    assert m["ratio_mean"] == pytest.approx(1.5) and m["clip_fraction"] == pytest.approx(0.5)
    assert m["jsd"] == pytest.approx(topk_tail_jsd(torch.zeros(1, 1, 4), torch.tensor([[[0, 1]]]), teacher[:, :1]).item())
    assert loss.item() == pytest.approx(m["policy"] + 0.1 * m["kl"] + 2.0 * m["jsd"])
    no_jsd, m2 = masters_loss(logps, old, ref, adv, mask, beta=0.1, jsd_weight=0.0)
    assert "jsd" not in m2 and no_jsd.item() == pytest.approx(m["policy"] + 0.1 * m["kl"])


def test_kl_k3_stays_finite_far_from_the_reference():
    """A token pushed 100 nats below the reference: exp(d) would overflow float32 to inf (and the
    weights to NaN); the clamped estimate stays finite with a finite gradient."""
    logps = torch.tensor([[-100.0, -1.0, math.log(0.25)]], requires_grad=True)
    ref = torch.tensor([[-0.01, -90.0, math.log(0.5)]])
    kl = kl_to_reference(logps, ref)
    assert torch.isinf(torch.exp(ref - logps.detach())).any()  # what the unclamped estimator meets
    assert torch.isfinite(kl).all() and kl[0, 0] == 10.0
    assert kl[0, 2].item() == pytest.approx(2 - math.log(2) - 1)  # unchanged inside the clamp
    kl.sum().backward()
    assert torch.isfinite(logps.grad).all()


def test_divergence_is_found_in_the_logs():
    from trainer.grpo import first_non_finite

    logs = [{"step": 5, "loss": 0.1, "grad_norm": 0.5}, {"step": 10, "loss": 0.0, "grad_norm": float("nan")}]
    assert first_non_finite(logs) == "step 10: grad_norm = nan"
    assert first_non_finite(logs[:1]) is None


def test_jsd_gradient_is_finite_when_the_student_puts_all_its_mass_on_the_top_k():
    """float32 rounds the student's top-k mass to exactly 1: the tail bucket is 0, where q log q
    has an infinite slope (this turned a demo's weights NaN after four iterations)."""
    from trainer.losses import topk_tail_jsd_from_logps

    student = torch.tensor([[[0.0, -30.0, -40.0]]], requires_grad=True)
    teacher = torch.log(torch.tensor([[[0.7, 0.2, 0.05]]]))
    jsd = topk_tail_jsd_from_logps(student, teacher)
    jsd.sum().backward()
    assert torch.isfinite(student.grad).all()
    # the floor moves nothing measurable where the tail is not 0
    loose = torch.tensor([[[-0.5, -2.0, -3.0]]])
    q = torch.cat([loose.exp(), 1 - loose.exp().sum(-1, keepdim=True)], -1)
    p = torch.cat([teacher.exp(), 1 - teacher.exp().sum(-1, keepdim=True)], -1)
    m = (p + q) / 2
    ref = 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()
    assert topk_tail_jsd_from_logps(loose, teacher).item() == pytest.approx(ref.item(), abs=1e-7)


def test_policy_ratio_is_bounded():
    logps = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-100.0, -1.0]])  # stored 100 nats lower
    out = policy_term(logps, old, torch.tensor([1.0]))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(logps.grad).all()
