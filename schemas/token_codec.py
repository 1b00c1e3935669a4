"""Compact encoding of per-token logit summaries (encoding ``fx16/1``).

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

ENCODING = "fx16/1"
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


DECODE_SQL = {  # SQL decoding of the catalog columns (snapshot materialisation)
    "teacher_logprobs": f"list_transform({{col}}, x -> (x / {LOGPROB_SCALE})::FLOAT)",
    "teacher_topk_logprobs": f"list_transform({{col}}, x -> (x / {LOGPROB_SCALE})::FLOAT)",
    "jsd": f"list_transform({{col}}, x -> (x / {JSD_SCALE})::FLOAT)",
    "kl_forward": f"list_transform({{col}}, x -> (x / {KL_SCALE})::FLOAT)",
    "kl_reverse": f"list_transform({{col}}, x -> (x / {KL_SCALE})::FLOAT)",
}
