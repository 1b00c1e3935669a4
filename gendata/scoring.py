"""Teacher-forced scoring: one pass of the masked teacher and one of the student over each
response (prompt + image + response tokens), summarised per token into the compact
`token_stats` rows (encoding in ``schemas/token_codec.py``):

- the teacher's and the student's log-prob of the emitted token,
- the exact JSD and forward / reverse KL, computed from the full distributions,
- the teacher's top-k token ids and log-probs.

Both distributions are over the ids the two models share (``gendata/vocab.py``): logits past
the tokenizer's last id (LM-head padding, which may differ between the two) are dropped and each
distribution is renormalised over the shared ids. The math is float32 whatever the models' dtype.

Vocabulary-sized tensors are made ``chunk`` positions at a time from the last hidden states (the
LM head is applied per chunk), so memory stays bounded on long responses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field

from gendata.hf_generate import _inputs
from gendata.masking import MaskPlan, MaskSpec, masked, plan_masks
from gendata.vocab import shared_vocab_size
from schemas import ids
from schemas import token_codec as codec
from schemas.config import StrictModel
from schemas.errors import MastersError
from schemas.tables import TOKEN_STATS

LN2 = math.log(2.0)


class ScoringConfig(StrictModel):
    top_k: int = Field(8, gt=0, description="teacher top-k kept per token")
    chunk: int = Field(256, gt=0, description="positions per vocabulary-sized chunk")
    compile: bool = Field(True, description="fuse the vocabulary-wide math with torch.compile "
                          "(falls back to eager where compiling fails)")


@dataclass
class TokenSummary:
    student_logprobs: np.ndarray
    teacher_logprobs: np.ndarray
    jsd: np.ndarray
    kl_forward: np.ndarray
    kl_reverse: np.ndarray
    topk_ids: np.ndarray  # (T, k)
    topk_logprobs: np.ndarray  # (T, k)


def _summary_core(t_logits: torch.Tensor, s_logits: torch.Tensor, token_ids: torch.Tensor, top_k: int):
    """With p, q the teacher and student distributions and m = (p + q) / 2:
    JSD = (sum p (log p - log m) + sum q (log q - log m)) / 2 (summed as KL terms: no cancellation
    of two entropies, which loses ~1e-5 in float32 over a 152k vocabulary);
    KL(p||q) = sum p (log p - log q); KL(q||p) = -sum q (log p - log q)."""
    # log-probs floored at -1e4: a zero-probability token (a -inf logit) then contributes
    # 0 * -1e4 = 0 instead of NaN, and a KL that is truly infinite comes out huge (stored clipped)
    tl, sl = t_logits.float(), s_logits.float()
    lse_t = tl.logsumexp(-1, keepdim=True)
    t = (tl - lse_t).clamp_min(-1e4)
    s = (sl - sl.logsumexp(-1, keepdim=True)).clamp_min(-1e4)
    p, q = t.exp(), s.exp()
    lm = ((p + q) * 0.5).log().clamp_min(-1e4)
    d = t - s
    jsd = 0.5 * ((p * (t - lm)).sum(-1) + (q * (s - lm)).sum(-1))
    kl_f = (p * d).sum(-1)
    kl_r = -(q * d).sum(-1)
    tok = token_ids.unsqueeze(-1)
    # top-k of the logits, not of the log-probs: same order (one shift per row), and the fused
    # kernel then never writes a vocabulary-sized tensor (about 40% of its time at 152k ids)
    top_v, top_i = tl.topk(top_k, dim=-1)
    top_v = (top_v - lse_t).clamp_min(-1e4)
    return (s.gather(-1, tok).squeeze(-1), t.gather(-1, tok).squeeze(-1), jsd.clamp_min(0),
            kl_f.clamp_min(0), kl_r.clamp_min(0), top_i, top_v)


_COMPILED = {}


def _core(compile_: bool, device: torch.device):
    """The summary math, fused by torch.compile (about 4x faster on CPU; compiled once per
    process and device type, cached by inductor across processes), or eager when compiling is
    off or fails (no compiler toolchain, no triton for the GPU...)."""
    if not compile_:
        return _summary_core
    if device.type not in _COMPILED:
        try:
            fn = torch.compile(_summary_core, dynamic=True)
            z = torch.zeros(2, 8, device=device)
            fn(z, z, torch.zeros(2, dtype=torch.long, device=device), 2)  # compile now
            _COMPILED[device.type] = fn
        except Exception:  # stay correct, eagerly
            _COMPILED[device.type] = _summary_core
    return _COMPILED[device.type]


def summarise(t_logits: torch.Tensor, s_logits: torch.Tensor, token_ids: torch.Tensor, top_k: int,
              compile_: bool = False) -> TokenSummary:
    """Per-token summaries of two (T, V) logit tensors for the emitted ``token_ids`` (T,),
    computed where the teacher's logits are (a GPU's vocabulary-wide math stays on the GPU;
    only the per-token results come back)."""
    k = min(top_k, t_logits.shape[-1])
    device = t_logits.device
    out = _core(compile_, device)(t_logits, s_logits.to(device), token_ids.to(device), k)
    return TokenSummary(*[x.detach().cpu().numpy() for x in out])


def _concat(parts: list[TokenSummary]) -> TokenSummary:
    return TokenSummary(*[np.concatenate([getattr(p, f) for p in parts])
                          for f in TokenSummary.__dataclass_fields__])


@torch.no_grad()
def _hidden(model, inputs: dict) -> torch.Tensor:
    """Last hidden states of the base model (no LM head: logits are made per chunk)."""
    return model.model(**inputs).last_hidden_state


def _teacher_forced_inputs(model, processor, prompt: str, image, completions: Sequence[Sequence[int]]):
    n = len(completions)
    inputs = _inputs(model, processor, [prompt] * n, [image] * n)
    p_len = inputs["input_ids"].shape[1]
    width = max(len(c) for c in completions)
    pad = processor.tokenizer.pad_token_id
    comp = torch.full((n, width), pad, dtype=inputs["input_ids"].dtype)
    mask = torch.zeros((n, width), dtype=inputs["attention_mask"].dtype)
    for j, c in enumerate(completions):
        comp[j, :len(c)] = torch.tensor(list(c))
        mask[j, :len(c)] = 1
    comp, mask = comp.to(model.device), mask.to(model.device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], mask], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in inputs:  # zero over the completion (Qwen-VL needs it for teacher forcing)
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(comp)], dim=1)
    return inputs, p_len


@torch.no_grad()
def score_group(teacher, student, processor, prompt: str, image, completions: Sequence[Sequence[int]],
                teacher_mask_ratio: float, plan: MaskPlan | None, config: ScoringConfig,
                mask_spec: MaskSpec | None = None, vocab: int | None = None) -> list[TokenSummary]:
    """Summaries for several responses to one prompt/image (one batched pass per model). The
    teacher's logits, LM head included, are made while its mask is applied. ``vocab``: the
    shared ids 0..vocab-1 the distributions are compared over (default: the tokenizer's)."""
    vocab = vocab or shared_vocab_size(teacher, student, len(processor.tokenizer))
    inputs, p_len = _teacher_forced_inputs(student, processor, prompt, image, completions)
    width = inputs["input_ids"].shape[1]
    # the positions predicting each completion token, of every response, in one flat list
    rows = torch.cat([torch.arange(len(c)) + (p_len - 1) + j * width for j, c in enumerate(completions)])
    ids = torch.cat([torch.tensor(list(c)) for c in completions])
    h_s = _hidden(student, inputs).flatten(0, 1)[rows]
    head_s = student.get_output_embeddings()
    parts = []
    with masked(teacher, teacher_mask_ratio, plan, mask_spec):
        h_t = _hidden(teacher, inputs).flatten(0, 1)[rows]
        head_t = teacher.get_output_embeddings()
        for start in range(0, len(ids), config.chunk):  # bounded memory: chunk x vocab at a time
            stop = start + config.chunk
            parts.append(summarise(head_t(h_t[start:stop])[:, :vocab], head_s(h_s[start:stop])[:, :vocab],
                                   ids[start:stop], config.top_k, config.compile))
    whole = _concat(parts)
    out, offset = [], 0
    for c in completions:
        out.append(TokenSummary(*[getattr(whole, f)[offset:offset + len(c)]
                                  for f in TokenSummary.__dataclass_fields__]))
        offset += len(c)
    return out


def token_stats_row(response_id: str, summary: TokenSummary, *, iteration_id: str, teacher_model_id: str,
                    teacher_mask_ratio: float, student_model_id: str, top_k: int, token_ids,
                    now: datetime | None = None, encoding: str = codec.ENCODING) -> dict:
    """A token_stats row of one response's summaries (``token_ids``: its emitted tokens)."""
    n = len(summary.jsd)
    if summary.topk_ids.shape != (n, top_k):
        raise ValueError(f"response {response_id}: top-k of shape {summary.topk_ids.shape}, expected ({n}, {top_k})")
    for field in ("student_logprobs", "teacher_logprobs", "jsd", "kl_forward", "kl_reverse", "topk_logprobs"):
        values = getattr(summary, field)
        if np.isnan(values).any():  # +/-inf is meaningful (a zero-probability token) and clips
            raise ValueError(f"response {response_id}: NaN {field} in the scoring pass "
                             "(a diverged model?); refusing to store it")
    return {
        "stats_id": ids.token_stats_id(response_id, teacher_model_id, teacher_mask_ratio,
                                       student_model_id, top_k, encoding),
        "response_id": response_id, "iteration_id": iteration_id, "teacher_model_id": teacher_model_id,
        "teacher_mask_ratio": teacher_mask_ratio, "student_model_id": student_model_id,
        "encoding": encoding, "top_k": top_k, "num_tokens": n,
        **codec.encode_columns(encoding, student_logprobs=summary.student_logprobs,
                               teacher_logprobs=summary.teacher_logprobs, jsd=summary.jsd,
                               kl_forward=summary.kl_forward, kl_reverse=summary.kl_reverse,
                               topk_ids=summary.topk_ids, topk_logprobs=summary.topk_logprobs, token_ids=token_ids),
        "created_at": now or datetime.now(timezone.utc)}


def score_responses(teacher, student, processor, responses: pa.Table,
                    image_of: Callable[[str], bytes] | Mapping[str, bytes], *, teacher_model_id: str,
                    teacher_mask_ratio: float, student_model_id: str, plan: MaskPlan | None = None,
                    config: ScoringConfig | None = None, skip: set[str] | None = None,
                    groups_per_batch: int = 8, mask_spec: MaskSpec | None = None,
                    vocab: int | None = None) -> Iterator[pa.Table]:
    """token_stats tables for the responses (grouped by question), ``groups_per_batch`` groups at a
    time, so a caller committing each table loses at most one batch on a crash. Responses whose
    stats id is in ``skip`` are not scored again. ``vocab``: the shared ids (``score_group``).
    A response with no token (an *empty* one: its engine stopped at once) has nothing to score and
    gets no row; the ``score`` stage counts such responses and the ``rewards`` stage leaves them
    out of their groups (``masters.stages.queries.EMPTY``)."""
    config = config or ScoringConfig()
    if plan is None and teacher_mask_ratio > 0:  # thresholds once per run, not once per group
        plan = plan_masks(teacher, [teacher_mask_ratio], mask_spec)
    vocab = vocab or shared_vocab_size(teacher, student, len(processor.tokenizer))
    lookup = image_of if callable(image_of) else image_of.__getitem__
    by_q: dict[tuple[str, str], list[dict]] = {}
    for r in responses.select(["response_id", "iteration_id", "question_id", "prompt", "token_ids"]).to_pylist():
        sid = ids.token_stats_id(r["response_id"], teacher_model_id, teacher_mask_ratio,
                                 student_model_id, config.top_k, codec.ENCODING)
        if skip and sid in skip:
            continue
        beyond = [t for t in r["token_ids"] or [] if not 0 <= t < vocab]
        if beyond:
            raise MastersError(f"response {r['response_id']} holds token id {beyond[0]}, outside the {vocab} ids "
                               "the teacher and student share: it was generated with another tokenizer")
        by_q.setdefault((r["question_id"], r["prompt"]), []).append(r)
    rows: list[dict] = []
    done_groups = 0
    for (qid, prompt), group in by_q.items():
        group = [r for r in group if r["token_ids"]]  # empty responses: nothing to score
        if not group:
            continue
        sums = score_group(teacher, student, processor, prompt, lookup(qid),
                           [r["token_ids"] for r in group], teacher_mask_ratio, plan, config, mask_spec, vocab)
        rows += [token_stats_row(r["response_id"], s, iteration_id=r["iteration_id"], teacher_model_id=teacher_model_id,
                                 teacher_mask_ratio=teacher_mask_ratio, student_model_id=student_model_id,
                                 top_k=config.top_k, token_ids=r["token_ids"]) for r, s in zip(group, sums)]
        done_groups += 1
        if done_groups % groups_per_batch == 0:
            yield pa.Table.from_pylist(rows, schema=TOKEN_STATS.schema)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=TOKEN_STATS.schema)
