"""Teacher and student logits with a language model's shape at any vocabulary size, for codec
tests and ``benchmarks/summaries.py`` (no checkpoint of that size exists here, and a random LM
head gives near-uniform distributions that no trained model has).

Per position, the teacher's sorted probabilities follow a power law in rank, p(r) ~ r^-alpha
(alpha uniform in [1.5, 3.5]: from an uncertain position to a confident one), with noise of
0.3 nats on the 64 leading ranks; the ranks beyond are drawn as -alpha log U, U uniform in
[64, vocab]. The student is the teacher plus noise (0.1 nats everywhere, 0.7 on the leading
ranks) at a temperature off by ~20%; the emitted token is sampled from the student.

Which ids hold the leading ranks (``order``):

- ``random``: uniform over the vocabulary, independently per position (ids carry no pattern:
  the worst case for storing them);
- ``shared``: drawn from one Zipf popularity over a fixed permutation of the vocabulary, so
  frequent tokens recur across positions as they do in text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

HEAD = 64
ORDERS = ("random", "shared")


def lm_logits(tokens: int, vocab: int, order: str = "random", seed: int = 0,
              chunk: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(teacher logits, student logits, emitted ids) per chunk of positions: (n, vocab) float32
    tensors and (n,) int64."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    popular = torch.from_numpy(rng.permutation(vocab))
    cdf = np.cumsum(1.0 / np.arange(1, vocab + 1))
    cdf /= cdf[-1]
    ranks = torch.arange(1, HEAD + 1, dtype=torch.float32).log()
    for start in range(0, tokens, chunk):
        n = min(chunk, tokens - start)
        alpha = torch.rand(n, 1, generator=g) * 2 + 1.5
        teacher = torch.rand(n, vocab, generator=g).mul_(vocab - HEAD).add_(HEAD).log_().mul_(-alpha)
        head = -alpha * ranks + torch.randn(n, HEAD, generator=g) * 0.3
        if order == "random":
            ids = torch.randint(0, vocab, (n, HEAD), generator=g)
        else:
            ids = popular[torch.from_numpy(np.minimum(np.searchsorted(cdf, rng.random((n, HEAD))), vocab - 1))]
        teacher.scatter_(1, ids, head)
        student = teacher + torch.randn(n, vocab, generator=g) * 0.1
        student.scatter_add_(1, ids, torch.randn(n, HEAD, generator=g) * 0.7)
        student.mul_(torch.exp(torch.randn(n, 1, generator=g) * 0.2))
        emitted = torch.multinomial(student.softmax(-1), 1, generator=g).squeeze(1)
        yield teacher, student, emitted


def exact_summaries(teacher: torch.Tensor, student: torch.Tensor, emitted: torch.Tensor, top_k: int) -> dict:
    """The reference per-token quantities in float64 from full logits (independent of the
    scorer's float32 kernel): JSD, both KLs, both log-probs of the emitted token, and the
    teacher's top-k probabilities (sorted) with the tail mass beyond them."""
    t = teacher.double().log_softmax(-1)
    s = student.double().log_softmax(-1)
    p, q = t.exp(), s.exp()
    m = ((p + q) / 2).log()
    top = t.topk(top_k, dim=-1)
    top_p = top.values.exp()
    return {"jsd": (0.5 * (p * (t - m)).sum(-1) + 0.5 * (q * (s - m)).sum(-1)).numpy(),
            "kl_forward": (p * (t - s)).sum(-1).numpy(), "kl_reverse": (q * (s - t)).sum(-1).numpy(),
            "teacher_logprobs": t.gather(-1, emitted[:, None]).squeeze(-1).numpy(),
            "student_logprobs": s.gather(-1, emitted[:, None]).squeeze(-1).numpy(),
            "topk_ids": top.indices.numpy(), "topk_p": top_p.numpy(),
            "tail": (1 - top_p.sum(-1)).clamp_min(0).numpy()}


def topk_tail_jsd(p: np.ndarray, tail: np.ndarray, q: np.ndarray, q_tail: np.ndarray) -> np.ndarray:
    """Per token, the JSD between two top-k + tail distributions ((T, k) probabilities on the
    same ids, and (T,) tails), in float64."""
    a = np.concatenate([p, tail[:, None]], 1).astype(np.float64)
    b = np.concatenate([q, q_tail[:, None]], 1).astype(np.float64)
    m = (a + b) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ka = np.where(a > 0, a * np.log(a / m), 0.0)
        kb = np.where(b > 0, b * np.log(b / m), 0.0)
    return 0.5 * (ka.sum(1) + kb.sum(1))
