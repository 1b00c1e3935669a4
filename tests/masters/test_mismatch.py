"""The train/inference mismatch: mean |delta| per token between the engine's log-probs and the
teacher-forced ones, per iteration and source."""

import numpy as np
import pyarrow as pa
import pytest

from masters.mismatch import mismatch_of
from schemas import token_codec as codec


def _rows(iteration, source, behaviour, forced):
    # as the query decodes them: the teacher side in fixed point
    teacher = codec.decode_logprobs(codec.encode_logprobs(forced)) if source == "teacher" else np.zeros(len(forced))
    student = np.asarray(forced, np.float32) if source == "student" else np.zeros(len(forced), np.float32)
    return {"iteration": iteration, "source": source, "behaviour": list(map(float, behaviour)),
            "encoding": codec.ENCODING, "teacher": teacher.tolist(), "student": student.tolist()}


def test_mean_abs_delta_per_iteration_and_source():
    rng = np.random.default_rng(0)
    f1, f2, f3 = (rng.uniform(-5, 0, n) for n in (7, 5, 4))
    rows = [_rows(0, "student", f1 + 0.25, f1),  # +0.25 on every token
            _rows(0, "student", f2 - 0.05, f2),
            _rows(0, "teacher", np.round(f3 * 1024) / 1024 + 0.5, f3),  # the stored teacher side is fixed point
            _rows(1, "student", f3, f3),
            _rows(1, "student", f1[:3], f1)]  # scored on more tokens than it has log-probs: left out
    got = {(m["iteration"], m["source"]): m for m in mismatch_of(pa.Table.from_pylist(rows))}
    assert set(got) == {(0, "student"), (0, "teacher"), (1, "student")}
    assert got[(0, "student")]["tokens"] == 12 and got[(0, "student")]["responses"] == 2
    assert got[(0, "student")]["mean_abs"] == pytest.approx((7 * 0.25 + 5 * 0.05) / 12, abs=1e-6)
    assert got[(0, "student")]["max_abs"] == pytest.approx(0.25, abs=1e-6)
    assert got[(0, "teacher")]["mean_abs"] == pytest.approx(0.5, abs=1e-3)
    assert got[(1, "student")] == {"iteration": 1, "source": "student", "responses": 1, "tokens": 4,
                                   "mean_abs": pytest.approx(0.0, abs=1e-6), "max_abs": pytest.approx(0.0, abs=1e-6)}
    assert mismatch_of(pa.Table.from_pylist(rows[:0], schema=pa.Table.from_pylist(rows).schema)) == []
