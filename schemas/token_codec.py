"""Compact encodings of per-token logit summaries: ``fx/2`` (written; ``schemas/token_codec_fx2.py``)
and ``fx16/1`` (read; this module), with the decoders that take either (``decode_table`` in
Python, ``sql_per_token`` and ``sql_divergence`` in SQL).

Encoding ``fx16/1``:

Per token, the catalog keeps: the student's log-prob of the emitted token (float32: it is the
GRPO old/reference log-prob), the masked teacher's log-prob of it, the exact JSD and forward /
reverse KL (computed from the full distributions at scoring time), and the teacher's top-k ids
(int32) and log-probs. Everything but the student log-prob and the ids is stored as int16
fixed point:

=====================  ==============  ===============  ===================================
quantity               stored as       scale            range, resolution
=====================  ==============  ===============  ===================================
log-probs              int16           x 1024           [-32, 0] nats, 0.001 (clipped below)
JSD                    int16           x 32768          [0, ln 2], 3e-5
KL (forward, reverse)  int16           x 1024           [0, 32) nats, 0.001 (clipped above)
=====================  ==============  ===============  ===================================

Decoding is one multiply (vectorised in numpy, or ``x / scale`` in SQL). The measured size
and error per setting are printed by ``benchmarks/summaries.py``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas import token_codec_fx2 as fx2
from schemas.errors import MastersError, UnknownKindError

FX16 = "fx16/1"
FX2 = fx2.ENCODING
ENCODING = FX2  # what scoring writes
ENCODINGS = (FX16, FX2)  # what this version reads
LOGPROB_FLOOR = -32.0  # teacher log-probs are stored clipped there, in both encodings
LOGPROB_SCALE = 1024.0
JSD_SCALE = 32768.0
KL_SCALE = 1024.0
_I16 = np.iinfo(np.int16)


def _fix(x: np.ndarray, scale: float, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * scale), lo * scale, hi * scale) \
        .clip(_I16.min, _I16.max).astype(np.int16)


def encode_logprobs(x) -> np.ndarray:
    return _fix(x, LOGPROB_SCALE, -32.0, 0.0)


def encode_jsd(x) -> np.ndarray:
    return _fix(x, JSD_SCALE, 0.0, float(np.log(2.0)))


def encode_kl(x) -> np.ndarray:
    return _fix(x, KL_SCALE, 0.0, 32.0)


def decode_logprobs(q) -> np.ndarray:
    return np.asarray(q, dtype=np.float32) / np.float32(LOGPROB_SCALE)


def decode_jsd(q) -> np.ndarray:
    return np.asarray(q, dtype=np.float32) / np.float32(JSD_SCALE)


def decode_kl(q) -> np.ndarray:
    return np.asarray(q, dtype=np.float32) / np.float32(KL_SCALE)


PER_TOKEN = ("student_logprobs", "teacher_logprobs", "jsd", "kl_forward", "kl_reverse")
DIVERGENCES = ("jsd", "kl_forward", "kl_reverse")
STORED_COLUMNS = ("encoding", "num_tokens", "top_k") + PER_TOKEN + ("teacher_topk_ids", "teacher_topk_logprobs") \
    + tuple(c for c in fx2.COLUMNS if not c.endswith("_sum"))  # what decode_table reads
_FX16_SCALE = {"student_logprobs": None, "teacher_logprobs": LOGPROB_SCALE, "jsd": JSD_SCALE,
               "kl_forward": KL_SCALE, "kl_reverse": KL_SCALE}
_FX2_SCALE = {"student_logprobs": -fx2.STUDENT_SCALE, "teacher_logprobs": -fx2.LOGPROB_SCALE,
              "jsd": fx2.JSD_SCALE, "kl_forward": fx2.KL_SCALE, "kl_reverse": fx2.KL_SCALE}


def check_encodings(values, where: str) -> None:
    unknown = sorted({v for v in values if v is not None} - set(ENCODINGS))
    if unknown:
        raise MastersError(f"{where}: token_stats encoding {unknown[0]!r} is not one this version reads "
                           f"({', '.join(ENCODINGS)}); upgrade masters-distill")


def sql_per_token(name: str, ts: str = "ts") -> str:
    """SQL decoding the per-token scalar ``name`` (one of PER_TOKEN) of a token_stats row of
    either encoding to a FLOAT list (``ts``: the table's alias)."""
    scale = _FX16_SCALE[name]
    old = f"{ts}.{name}" if scale is None else f"list_transform({ts}.{name}, x -> (x / {scale})::FLOAT)"
    new = f"list_transform({ts}.fx2_{name}, x -> ((x - {1 << 23}) / {_FX2_SCALE[name]})::FLOAT)"
    return f"(CASE WHEN {ts}.encoding = '{FX2}' THEN {new} ELSE {old} END)"


def sql_divergence(name: str, aggregation: str, ts: str = "ts") -> str:
    """SQL of a response's D: the ``mean`` or ``sum`` over its tokens of divergence ``name``
    (DOUBLE). ``fx/2`` rows hold the exact sum; ``fx16/1`` rows sum their fixed-point values."""
    if name not in DIVERGENCES:
        raise UnknownKindError("divergence", name, list(DIVERGENCES))
    if aggregation not in ("mean", "sum"):
        raise UnknownKindError("aggregation", aggregation, ["mean", "sum"])
    agg = "list_avg" if aggregation == "mean" else "list_sum"
    exact = f"{ts}.{name}_sum" + (f" / {ts}.num_tokens" if aggregation == "mean" else "")
    return (f"(CASE WHEN {ts}.encoding = '{FX2}' THEN {exact} "
            f"ELSE {agg}({ts}.{name})::DOUBLE / {_FX16_SCALE[name]} END)")


def encode_columns(encoding: str = ENCODING, *, student_logprobs, teacher_logprobs, jsd, kl_forward, kl_reverse,
                   topk_ids, topk_logprobs, token_ids=None) -> dict:
    """The per-token columns of a token_stats row in ``encoding`` (the other encoding's columns
    empty or null), from one response's summaries: arrays of its n tokens, top-k as (n, k);
    ``token_ids``: the emitted tokens (``fx/2`` needs them)."""
    n = len(jsd)
    if encoding == FX2:
        if token_ids is None or len(token_ids) != n:
            raise ValueError(f"fx/2 needs the {n} emitted token ids of the response")
        empty = np.zeros(0, np.int16)
        return {"student_logprobs": np.zeros(0, np.float32), "teacher_logprobs": empty, "jsd": empty,
                "kl_forward": empty, "kl_reverse": empty, "teacher_topk_ids": np.zeros(0, np.int32),
                "teacher_topk_logprobs": empty, **fx2.encode_row(
                    student_logprobs=student_logprobs, teacher_logprobs=teacher_logprobs, jsd=jsd,
                    kl_forward=kl_forward, kl_reverse=kl_reverse, topk_ids=topk_ids, topk_logprobs=topk_logprobs,
                    token_ids=token_ids)}
    if encoding == FX16:
        return {"student_logprobs": np.asarray(student_logprobs, np.float32),
                "teacher_logprobs": encode_logprobs(teacher_logprobs), "jsd": encode_jsd(jsd),
                "kl_forward": encode_kl(kl_forward), "kl_reverse": encode_kl(kl_reverse),
                "teacher_topk_ids": np.asarray(topk_ids, np.int32).reshape(-1),
                "teacher_topk_logprobs": encode_logprobs(np.asarray(topk_logprobs).reshape(-1)),
                **{c: None for c in fx2.COLUMNS}}
    raise ValueError(f"unknown token_stats encoding {encoding!r} (known: {', '.join(ENCODINGS)})")


DECODED = pa.schema([(n, pa.list_(pa.float32())) for n in PER_TOKEN]
                    + [("teacher_topk_ids", pa.list_(pa.int32())), ("teacher_topk_logprobs", pa.list_(pa.float32()))])


def _lists(offsets: np.ndarray, values: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, typ))


def _decode_fx16(t: pa.Table) -> list[pa.Array]:
    out = []
    for name in PER_TOKEN:
        v, off = fx2.list_values(t.column(name))
        scale = _FX16_SCALE[name]
        out.append(_lists(off, v.astype(np.float32) if scale is None else v.astype(np.float32) / np.float32(scale),
                          pa.float32()))
    v, off = fx2.list_values(t.column("teacher_topk_ids"))
    out.append(_lists(off, v.astype(np.int32), pa.int32()))
    v, off = fx2.list_values(t.column("teacher_topk_logprobs"))
    out.append(_lists(off, decode_logprobs(v), pa.float32()))
    return out


def _decode_fx2(t: pa.Table, token_ids) -> list[pa.Array]:
    d = fx2.decode(t, token_ids)
    k = d.topk_ids.shape[1]
    out = [_lists(d.offsets, getattr(d, n), pa.float32()) for n in PER_TOKEN]
    out.append(_lists(d.offsets * k, d.topk_ids.reshape(-1), pa.int32()))
    out.append(_lists(d.offsets * k, d.topk_logprobs.reshape(-1), pa.float32()))
    return out


def decode_table(table: pa.Table, token_ids=None) -> pa.Table:
    """The decoded per-token columns (``DECODED``: float32 log-probs and divergences, top-k ids
    and log-probs flattened tokens x k) of token_stats rows of any readable encoding, in row
    order; a row whose ``encoding`` is null (no summaries) decodes to nulls. ``token_ids``: the
    rows' emitted token ids (``responses.token_ids``; ``fx/2`` rows need them), a list column."""
    n = table.num_rows
    enc = table.column("encoding").to_pylist()
    check_encodings(enc, "token_stats")
    if token_ids is not None and not isinstance(token_ids, (pa.Array, pa.ChunkedArray)):
        token_ids = pa.array(token_ids, pa.list_(pa.int32()))
    pieces, order = [], []
    groups: dict[tuple, list[int]] = {}
    for i, (e, k) in enumerate(zip(enc, table.column("top_k").to_pylist())):
        groups.setdefault((e, k), []).append(i)
    for (e, k), rows in groups.items():
        one = len(groups) == 1  # the usual case: no copy
        idx = None if one else pa.array(rows, pa.int64())
        part = table if one else table.take(idx)
        if e is None:
            cols = [pa.nulls(len(rows), f.type) for f in DECODED]
        elif e == FX16:
            cols = _decode_fx16(part)
        else:
            if token_ids is None:
                raise ValueError("decoding fx/2 token_stats needs the responses' token ids")
            cols = _decode_fx2(part, token_ids if one else token_ids.take(idx))
        pieces.append(pa.Table.from_arrays(cols, schema=DECODED))
        order += rows
    if not pieces:
        return DECODED.empty_table()
    whole = pa.concat_tables(pieces)
    inverse = np.empty(n, np.int64)
    inverse[np.asarray(order, np.int64)] = np.arange(n)
    return whole.take(pa.array(inverse)) if order != list(range(n)) else whole
