"""The train/inference mismatch of a run: per iteration and source, the mean |delta| per token
between the log-prob the generating engine gave each token (``responses.behaviour_logprobs``:
vLLM's, or transformers generate's) and the teacher-forced log-prob the scoring pass computed for
the same model (``token_stats``: the masked teacher's for teacher responses, the student's for
student responses). RL stacks that sample with one engine and train with another know this gap
(kernels, batching, precision); here it is measured, not assumed away.

Teacher log-probs are stored in fixed point (resolution 0.001 nats, floor -32, ``schemas/token_codec.py``),
so a teacher-side mean below ~0.0005 is at the storage resolution; student log-probs are float32
(``fx16/1``) or in steps of 2^-16 nats with a floor of -127 (``fx/2``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog import Catalog
from schemas import token_codec as codec

SQL = f"""
SELECT it.iteration, r.source, r.behaviour_logprobs AS behaviour, s.encoding,
       {codec.sql_per_token("teacher_logprobs", "s")} AS teacher,
       {codec.sql_per_token("student_logprobs", "s")} AS student
FROM responses r
JOIN token_stats s USING (response_id, iteration_id)
JOIN iterations it USING (iteration_id)
WHERE it.run_id = $r AND r.behaviour_logprobs IS NOT NULL
  AND s.teacher_model_id = it.teacher_model_id AND s.student_model_id = it.student_model_id
  AND s.teacher_mask_ratio = it.mask_ratio
"""
FLOOR = {"teacher": codec.LOGPROB_FLOOR, "student": codec.fx2.STUDENT_FLOOR}  # stored clipped there


def _flat(column: pa.ChunkedArray) -> np.ndarray:
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float64)


def logprob_mismatch(catalog: Catalog, run_id: str) -> list[dict]:
    """Rows of iteration, source, responses, tokens, mean_abs, max_abs (log-prob |delta| per
    token, nats), for the responses whose engine gave log-probs; [] when none did."""
    if "behaviour_logprobs" not in catalog.sql("SELECT * FROM responses LIMIT 0").column_names:
        return []  # a catalog from before the column (read-only: not upgraded)
    return mismatch_of(catalog.sql(SQL, params={"r": run_id}))


def mismatch_of(table: pa.Table) -> list[dict]:
    """The rows of ``logprob_mismatch`` from the joined rows (iteration, source, behaviour,
    encoding, teacher, student: log-probs decoded to floats)."""
    out = []
    codec.check_encodings(table.column("encoding").to_pylist(), "token_stats")
    pairs = sorted(set(zip(table.column("iteration").to_pylist(), table.column("source").to_pylist())))
    for iteration, source in pairs:
        part = table.filter(pc.and_(pc.equal(table.column("iteration"), iteration),
                                    pc.equal(table.column("source"), source)))
        n_b = pc.list_value_length(part.column("behaviour")).to_numpy(zero_copy_only=False)
        side = "teacher" if source == "teacher" else "student"
        n_s = pc.list_value_length(part.column(side)).to_numpy(zero_copy_only=False)
        keep = np.flatnonzero(n_b == n_s)  # a response scored on fewer tokens than generated: left out
        if not len(keep):
            continue
        part = part.take(pa.array(keep))
        behaviour = _flat(part.column("behaviour"))
        forced = _flat(part.column(side))  # decoded by the query (either encoding)
        behaviour = np.maximum(behaviour, FLOOR[side])  # stored clipped at the codec's floor: like with like
        delta = np.abs(behaviour - forced)
        out.append({"iteration": iteration, "source": source, "responses": len(keep), "tokens": int(delta.size),
                    "mean_abs": float(delta.mean()) if delta.size else 0.0,
                    "max_abs": float(delta.max()) if delta.size else 0.0})
    return out
