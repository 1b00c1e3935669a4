"""Encoding ``fx/2`` of the per-token logit summaries: the ``fx16/1`` quantities, exact, in about
half the bytes at a real vocabulary (``benchmarks/summaries.py`` measures it).

What changes from ``fx16/1``, and why (sizes at vocabulary 151,936, top-8, random id order):

- **D is stored exactly.** ``jsd_sum``, ``kl_forward_sum`` and ``kl_reverse_sum`` (float64) hold
  each response's sum of the per-token divergences as computed, so the reward's D (their mean
  or sum) carries no fixed-point error at all. The per-token values keep ``fx16/1``'s
  resolution (JSD 2^-15, KL 2^-10 nats).
- **The emitted token's top-k entry is not stored twice.** When the emitted token is in the
  teacher's top-k, its id is the response's token id and its log-prob is the stored teacher
  log-prob; only a flag (``fx2_topk_hit``) says so. The others are stored by log-prob, so their
  sqrt(p) steps are stored as drops, and decoding puts the emitted one back where it ranks
  without sorting.
- **The teacher's top-k probabilities are quantised as sqrt(p)**, with the tail (the mass
  outside the top-k) stored too: for small errors JSD(p, p') ~ sum (sqrt p - sqrt p')^2 / 2, so
  a uniform step in sqrt(p) bounds the reconstruction JSD whatever the shape, and a stored tail
  is not amplified when it is small (``fx16/1`` derives it as 1 - sum, which costs up to ~3e-5
  of JSD on peaked tokens). Decoding renormalises, so 1 - sum(top-k) equals the stored tail.
- **Every integer stream is written with BYTE_STREAM_SPLIT + zstd.** DuckDB reads that encoding
  for floats only, so each integer 0 <= v < 2^23 travels as the float32 2^23 + v, whose bytes are
  v's bytes under a constant exponent (``carry`` / ``uncarry``): the byte planes of the ids, of the
  probabilities... are compressed apart, across a file's rows.

Per row of n tokens (k the row's top-k, h_t = 1 if the emitted token is in token t's top-k):

==========================  =========================================================  =========
column                      value (integers ride the float32 carrier)                   items
==========================  =========================================================  =========
fx2_student_logprobs        round(-lp * 2^16), lp clipped to [-127, 0]                 n
fx2_teacher_logprobs        round(-lp * 2^10), lp clipped to [-32, 0] (as fx16/1)      n
fx2_jsd                     round(jsd * 2^15), clipped to [0, ln 2] (as fx16/1)        n
fx2_kl_forward / _reverse   round(kl * 2^10), clipped to [0, 32] (as fx16/1)           n
fx2_topk_hit                h_t (bool)                                                 n
fx2_topk_ids                per token, the top-k ids but the emitted one, by log-prob  sum k - h_t
fx2_topk_sqrtp              per token, s_i = round(1024 sqrt(p_i)) of those ids: s_1,  sum k - h_t
                            then each drop s_(i-1) - s_i (>= 0)
fx2_topk_tail               per token, round(1024 sqrt(1 - sum of the top-k p))        n
jsd_sum, kl_*_sum           float64 sums over the response's tokens                    1
==========================  =========================================================  =========

The ``fx16/1`` list columns hold empty lists in an ``fx/2`` row. Decoding (``decode``) is
vectorised over all rows of a table at once (no per-row Python) and needs each row's emitted
token ids (``responses.token_ids``); it gives the ``fx16/1`` decoded form: float32 log-probs and
divergences per token, and the top-k ids and log-probs per token, sorted by log-prob as the
scorer's top-k is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ENCODING = "fx/2"
STUDENT_SCALE = 65536.0
STUDENT_FLOOR = -127.0
LOGPROB_SCALE = 1024.0
LOGPROB_FLOOR = -32.0
JSD_SCALE = 32768.0
KL_SCALE = 1024.0
KL_CEIL = 32.0
SQRTP_SCALE = 1024.0
CARRIER_BITS = np.int32(0x4B000000)  # float32 bits of 2^23: sign 0, exponent 150, mantissa 0
_MANTISSA = np.int32(0x7FFFFF)
# the probability of each sqrt(p) step, and its log (step 0, below half a step, is kept > 0)
_P = (np.maximum(np.arange(int(SQRTP_SCALE) + 1), 0.25) / SQRTP_SCALE) ** 2
_LOG_P = np.log(_P).astype(np.float32)

SCALAR_STREAMS = ("fx2_student_logprobs", "fx2_teacher_logprobs", "fx2_jsd", "fx2_kl_forward", "fx2_kl_reverse")
TOPK_STREAMS = ("fx2_topk_ids", "fx2_topk_sqrtp", "fx2_topk_tail")
CARRIED = SCALAR_STREAMS + TOPK_STREAMS
COLUMNS = CARRIED + ("fx2_topk_hit", "jsd_sum", "kl_forward_sum", "kl_reverse_sum")


def carry(v: np.ndarray) -> np.ndarray:
    """Integers 0 <= v < 2^23 as the float32 values 2^23 + v (exact; the low 23 bits are v)."""
    v = np.asarray(v, dtype=np.int64)
    if v.size and (v.min() < 0 or v.max() >= 1 << 23):
        raise ValueError(f"value {int(v.min() if v.min() < 0 else v.max())} outside the carrier's range [0, 2^23)")
    return (v.astype(np.int32) | CARRIER_BITS).view(np.float32)


def uncarry(f: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(f, dtype=np.float32).view(np.int32) & _MANTISSA


def _fix(x, scale: float, lo: float, hi: float, negate: bool = False) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
    return np.rint(-x * scale if negate else x * scale).astype(np.int64)


def encode_row(*, student_logprobs, teacher_logprobs, jsd, kl_forward, kl_reverse, topk_ids, topk_logprobs,
               token_ids) -> dict:
    """The ``fx/2`` columns of one response's summaries (arrays of n tokens; top-k as (n, k))."""
    n = len(jsd)
    ids = np.asarray(topk_ids, dtype=np.int64).reshape(n, -1)
    k = ids.shape[1]
    lps = np.asarray(topk_logprobs, dtype=np.float64).reshape(n, k)
    by_lp = np.argsort(-lps, axis=1, kind="stable")  # the scorer's order already; made sure
    ids, lps = np.take_along_axis(ids, by_lp, 1), np.take_along_axis(lps, by_lp, 1)
    tok = np.asarray(token_ids, dtype=np.int64).reshape(n)
    t_lp = np.asarray(teacher_logprobs, dtype=np.float64)
    is_tok = ids == tok[:, None]
    hit = is_tok.any(1) & (t_lp >= LOGPROB_FLOOR)
    keep = ~(is_tok & hit[:, None])
    p = np.exp(lps)
    tail = np.clip(1.0 - p.sum(1), 0.0, 1.0)
    u = np.rint(np.sqrt(p) * SQRTP_SCALE).astype(np.int64)  # non-increasing along each row
    left = np.argsort(~keep, axis=1, kind="stable")  # the kept entries first, still by log-prob
    k_ids, k_u = np.take_along_axis(ids, left, 1), np.take_along_axis(u, left, 1)
    stored = k - hit.astype(np.int64)
    m_ids = np.arange(k)[None, :] < stored[:, None]
    steps = k_u.copy()
    steps[:, 1:] = k_u[:, :-1] - k_u[:, 1:]  # the first, then the drops (>= 0 where kept)
    sums = {f"{name}_sum": float(np.asarray(v, dtype=np.float32).astype(np.float64).sum())  # as computed
            for name, v in (("jsd", jsd), ("kl_forward", kl_forward), ("kl_reverse", kl_reverse))}
    bad = [name for name, v in sums.items() if not np.isfinite(v)]
    if bad:
        raise ValueError(f"{bad[0]} is not finite: a divergence to store must be a number")
    return {
        "fx2_student_logprobs": carry(_fix(student_logprobs, STUDENT_SCALE, STUDENT_FLOOR, 0.0, negate=True)),
        "fx2_teacher_logprobs": carry(_fix(t_lp, LOGPROB_SCALE, LOGPROB_FLOOR, 0.0, negate=True)),
        "fx2_jsd": carry(_fix(jsd, JSD_SCALE, 0.0, float(np.log(2.0)))),
        "fx2_kl_forward": carry(_fix(kl_forward, KL_SCALE, 0.0, KL_CEIL)),
        "fx2_kl_reverse": carry(_fix(kl_reverse, KL_SCALE, 0.0, KL_CEIL)),
        "fx2_topk_hit": hit,
        "fx2_topk_ids": carry(k_ids[m_ids]),
        "fx2_topk_sqrtp": carry(steps[m_ids]),
        "fx2_topk_tail": carry(np.rint(np.sqrt(tail) * SQRTP_SCALE).astype(np.int64)),
        **sums,
    }


@dataclass
class Decoded:
    """Per-token arrays of several rows, flattened (row r's tokens at offsets[r]:offsets[r + 1])."""
    offsets: np.ndarray
    student_logprobs: np.ndarray
    teacher_logprobs: np.ndarray
    jsd: np.ndarray
    kl_forward: np.ndarray
    kl_reverse: np.ndarray
    topk_ids: np.ndarray  # (T, k)
    topk_logprobs: np.ndarray  # (T, k), each token's by log-prob (the emitted one before an equal stored one)


def list_values(column) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, list offsets) of a list column (chunked or not), nulls as empty lists."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = pc.fill_null(arr, pa.scalar([], arr.type)) if arr.null_count else arr
    offsets = arr.offsets.to_numpy()
    values = arr.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False)
    return values, offsets - offsets[0]


def _segment_total(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sums of ``x`` over the contiguous segments [starts, starts + lengths) (empty ones: 0)."""
    out = np.zeros(len(lengths), np.float64 if x.dtype.kind == "f" else np.int64)
    some = lengths > 0
    if some.any():  # reduceat over the non-empty starts only: an empty segment has no length
        out[some] = np.add.reduceat(x, starts[some])
    return out


def _segment_cumsum(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each segment of ``lengths`` (vectorised)."""
    c = np.cumsum(x)
    starts = np.cumsum(lengths) - lengths
    before = np.where(starts > 0, c[np.maximum(starts - 1, 0)], 0)
    return c - np.repeat(before, lengths)


def decode(table: pa.Table, token_ids) -> Decoded:
    """Decode the ``fx/2`` rows of ``table`` (its ``fx2_*``, ``num_tokens`` and ``top_k``
    columns); ``token_ids``: the rows' emitted token ids (a list column or list of lists)."""
    num_tokens = table.column("num_tokens").to_numpy().astype(np.int64)
    ks = np.unique(table.column("top_k").to_numpy())
    if len(ks) > 1:
        raise ValueError(f"decode one top-k at a time (this table holds k = {', '.join(map(str, ks))})")
    k = int(ks[0]) if len(ks) else 1
    offsets = np.concatenate([[0], np.cumsum(num_tokens)])
    total = int(offsets[-1])
    if not isinstance(token_ids, (pa.Array, pa.ChunkedArray)):
        token_ids = pa.array(token_ids, pa.list_(pa.int32()))
    tok = list_values(token_ids)[0].astype(np.int32)
    if len(tok) != total:
        raise ValueError(f"{len(tok)} emitted token ids for {total} scored tokens")
    streams = {}
    for name in SCALAR_STREAMS:
        v, _ = list_values(table.column(name))
        streams[name] = uncarry(v)
        if len(streams[name]) != total:
            raise ValueError(f"{name}: {len(streams[name])} values for {total} tokens")
    hit, _ = list_values(table.column("fx2_topk_hit"))
    hit = hit.astype(bool)
    stored = k - hit.astype(np.int64)
    kept_ids = uncarry(list_values(table.column("fx2_topk_ids"))[0])
    steps = -uncarry(list_values(table.column("fx2_topk_sqrtp"))[0]).astype(np.int64)
    tail = uncarry(list_values(table.column("fx2_topk_tail"))[0])
    if len(kept_ids) != stored.sum() or len(steps) != stored.sum() or len(tail) != total:
        raise ValueError("fx2_topk_ids / fx2_topk_sqrtp / fx2_topk_tail do not match fx2_topk_hit and top_k")
    starts = np.cumsum(stored) - stored
    some = stored > 0
    steps[starts[some]] = -steps[starts[some]]  # each token's first is its largest step, then the drops
    u = _segment_cumsum(steps, stored)
    if len(u) and (u.min() < 0 or u.max() > SQRTP_SCALE):
        raise ValueError("fx2_topk_sqrtp holds steps outside [0, 1024]: the row is corrupt")
    p_tail = (tail / SQRTP_SCALE) ** 2

    teacher = -streams["fx2_teacher_logprobs"].astype(np.float32) / np.float32(LOGPROB_SCALE)
    p_kept = _P[u]
    p_e = np.exp(teacher.astype(np.float64))
    token_of = np.repeat(np.arange(total, dtype=np.int32), stored)
    # per token: the stored mass, and how many stored entries rank above the emitted token (the
    # stored ones are by log-prob, so those come first), as sums over each token's segment
    mass = _segment_total(p_kept, starts, stored)
    above = _segment_total((p_kept > p_e[token_of]).astype(np.int32), starts, stored)
    log_z = np.log(mass + np.where(hit, p_e, 0.0) + p_tail).astype(np.float32)
    # the emitted token goes in where it ranks: the output is sorted without a sort, each entry
    # scattered into its slot, its log-prob read from a table of the 1,025 steps
    pos = np.where(hit, above, k).astype(np.int32)
    j = np.arange(len(u), dtype=np.int32) - np.repeat(starts.astype(np.int32), stored)
    dest = token_of * k + j + (j >= pos[token_of])
    ids = np.empty(total * k, np.int32)
    lp = np.empty(total * k, np.float32)
    ids[dest], lp[dest] = kept_ids, _LOG_P[u] - log_z[token_of]
    e_dest = np.flatnonzero(hit) * k + pos[hit]
    ids[e_dest], lp[e_dest] = tok[hit], teacher[hit] - log_z[hit]
    ids, lp = ids.reshape(total, k), lp.reshape(total, k)
    return Decoded(
        offsets=offsets,
        student_logprobs=-streams["fx2_student_logprobs"].astype(np.float32) / np.float32(STUDENT_SCALE),
        teacher_logprobs=teacher,
        jsd=streams["fx2_jsd"].astype(np.float32) / np.float32(JSD_SCALE),
        kl_forward=streams["fx2_kl_forward"].astype(np.float32) / np.float32(KL_SCALE),
        kl_reverse=streams["fx2_kl_reverse"].astype(np.float32) / np.float32(KL_SCALE),
        topk_ids=ids, topk_logprobs=lp)
