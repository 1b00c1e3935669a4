"""The terms of the paper's training objective (Appendix B), each a pure function of tensors, so
each has its own golden-value test and the TRL subclass (trainer/grpo.py, OfflineGRPOTrainer) stays thin.

Shapes: B sequences x T completion tokens; ``mask`` (B, T) is 1 on real completion tokens.

- policy term (GRPO): per token -min(rho * A, clip(rho, 1 - eps, 1 + eps) * A), with
  rho = exp(logp - logp_old) (1 in the paper's one-update-per-iteration regime);
- KL to the reference policy, TRL's k3 estimator: exp(ref - logp) - (ref - logp) - 1, weighted by
  beta (0.1 in the paper), the stored student log-probs serving as the reference;
- JSD(masked teacher || student) over the stored teacher top-k renormalised with one tail bucket:
  both distributions are put on the k teacher tokens plus "everything else", and the JSD of those
  (k + 1)-bucket distributions is taken per token.

Token losses are averaged per sequence, then over sequences (GRPO's aggregation).
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)
TAIL_FLOOR = 1e-12  # smallest tail-bucket probability (changes a JSD by < 1e-11)
LOG_RATIO_CLAMP = 20.0  # |log importance ratio| bound, as verl's policy losses clamp it


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's real tokens, then over sequences (empty sequences count 0)."""
    mask = mask.to(per_token.dtype)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    return per_seq.mean()


def policy_term(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                epsilon_low: float = 0.2, epsilon_high: float = 0.2) -> torch.Tensor:
    """Per-token clipped policy-gradient loss; ``advantages`` is (B,) (one per sequence). The log
    ratio is clamped to +-20 first (verl does the same, "for stability"): a token the JSD term has
    raised by more than 88 nats since it was stored would give exp() = inf, and the clipped
    branch's zero gradient times inf is NaN."""
    ratio = torch.exp((logps - old_logps).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    adv = advantages.unsqueeze(-1)
    return -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv)


def kl_to_reference(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - logp,
    d clamped to [-20, 20] and the estimate to at most 10, as verl's ``low_var_kl`` does
    (verl/trainer/ppo/core_algos.py, "for numerical stability"): a token the policy has pushed
    far below the reference (the JSD term does, over several epochs) would otherwise give
    exp(d) = inf and NaN weights."""
    d = (ref_logps - logps).clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1).clamp(max=10.0)


def topk_tail_jsd(student_logits: torch.Tensor, topk_ids: torch.Tensor,
                  topk_logps: torch.Tensor) -> torch.Tensor:
    """Per-token JSD between the teacher, known by its top-k log-probs, and the student's live
    distribution, both renormalised onto the k teacher tokens plus one tail bucket.

    student_logits (B, T, V); topk_ids, topk_logps (B, T, k). Differentiable in the student."""
    s_logp = student_logits.float().log_softmax(-1)
    return topk_tail_jsd_from_logps(s_logp.gather(-1, topk_ids.long()), topk_logps)


def topk_tail_jsd_from_logps(student_topk_logps: torch.Tensor, teacher_topk_logps: torch.Tensor) -> torch.Tensor:
    """The same JSD from the student's log-probs *of the teacher's top-k tokens* (B, T, k): all
    the term needs, so the trainer never materialises a full log-softmax over the vocabulary."""
    q_k = student_topk_logps.float().exp()
    p_k = teacher_topk_logps.float().exp()
    # the tail bucket is floored above 0: a student with all its mass on the k tokens has a tail
    # of exactly 0 in float32, where q log q has an infinite slope and the gradient turns NaN
    p = torch.cat([p_k, (1 - p_k.sum(-1, keepdim=True)).clamp_min(TAIL_FLOOR)], dim=-1)
    q = torch.cat([q_k, (1 - q_k.sum(-1, keepdim=True)).clamp_min(TAIL_FLOOR)], dim=-1)
    p = p / p.sum(-1, keepdim=True)                                    # exact renormalisation
    q = q / q.sum(-1, keepdim=True)
    m = 0.5 * (p + q)
    return 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1) \
        + 0.5 * (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)


def masters_loss(logps, old_logps, ref_logps, advantages, mask, *, student_topk_logps=None,
                 teacher_topk_logps=None, beta: float = 0.1, jsd_weight: float = 1.0,
                 epsilon_low: float = 0.2, epsilon_high: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """policy + beta * KL(ref) + jsd_weight * JSD(teacher top-k || student), each sequence-mean.
    Also returns the terms and the mean importance ratio / clipped fraction as floats."""
    policy = sequence_mean(policy_term(logps, old_logps, advantages, epsilon_low, epsilon_high), mask)
    kl = sequence_mean(kl_to_reference(logps, ref_logps), mask)
    loss = policy + beta * kl
    with torch.no_grad():
        real = mask.bool()
        ratio = torch.exp((logps - old_logps).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))[real]
        clipped = ((ratio < 1 - epsilon_low) | (ratio > 1 + epsilon_high)).float()
    metrics = {"policy": float(policy.detach()), "kl": float(kl.detach()),
               "ratio_mean": float(ratio.mean()) if ratio.numel() else 1.0,
               "clip_fraction": float(clipped.mean()) if clipped.numel() else 0.0}
    if jsd_weight and student_topk_logps is not None:
        jsd = sequence_mean(topk_tail_jsd_from_logps(student_topk_logps, teacher_topk_logps), mask)
        loss = loss + jsd_weight * jsd
        metrics["jsd"] = float(jsd.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics
