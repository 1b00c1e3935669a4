"""The fx/2 per-token summaries at a real vocabulary (151,936 ids): what the scorer computes,
encoded, written as the catalog writes it and decoded, against float64 from the full logits."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gendata.scoring import summarise, token_stats_row
from gendata.synthetic_logits import exact_summaries, lm_logits, topk_tail_jsd
from schemas import token_codec as codec
from schemas.tables import TOKEN_STATS

VOCAB = 151_936


@pytest.fixture(scope="module")
def scored():
    """4 responses of 64 tokens, random id order: the scorer's rows and the float64 reference."""
    rows, exact, emitted = [], [], []
    for j, (t, s, tok) in enumerate(lm_logits(256, VOCAB, "random", seed=3, chunk=64)):
        summary = summarise(t, s, tok, 8)
        rows.append(token_stats_row(f"r{j}", summary, iteration_id="it", teacher_model_id="t", teacher_mask_ratio=0.2,
                                    student_model_id="s", top_k=8, token_ids=tok.numpy()))
        exact.append(exact_summaries(t, s, tok, 8))
        emitted.append(tok.numpy().astype(np.int32).tolist())
    table = TOKEN_STATS.rows(rows)
    buf = io.BytesIO()
    pq.write_table(table, buf, **TOKEN_STATS.parquet)  # as the catalog writes its data files
    back = pq.read_table(io.BytesIO(buf.getvalue()))
    ref = {k: np.concatenate([e[k] for e in exact]) for k in exact[0]}
    return back, codec.decode_table(back, emitted), ref, exact, emitted


def flat(decoded, name):
    return decoded.column(name).combine_chunks().values.to_numpy()


def test_rows_are_fx2_and_d_is_exact(scored):
    back, _, _, exact, _ = scored
    assert set(back.column("encoding").to_pylist()) == {"fx/2"}
    for name in codec.DIVERGENCES:  # the reward's D, mean and sum, from the stored sums
        for row, e in zip(back.to_pylist(), exact):
            assert abs(row[f"{name}_sum"] / row["num_tokens"] - e[name].mean()) <= 1e-5
            assert abs(row[f"{name}_sum"] - e[name].sum()) <= 1e-5 * row["num_tokens"]


def test_per_token_values_within_half_a_step(scored):
    _, decoded, ref, _, _ = scored
    f32 = 2e-6  # the scorer's float32 arithmetic over 151,936 ids
    assert np.abs(flat(decoded, "jsd") - ref["jsd"]).max() <= 0.5 / 32768 + f32
    for name in ("kl_forward", "kl_reverse"):
        assert np.abs(flat(decoded, name) - np.minimum(ref[name], 32)).max() <= 0.5 / 1024 + f32
    assert np.abs(flat(decoded, "teacher_logprobs") - np.maximum(ref["teacher_logprobs"], -32)).max() <= 0.5 / 1024 + f32
    assert np.abs(flat(decoded, "student_logprobs") - ref["student_logprobs"]).max() <= 0.5 / 65536 + f32


def test_topk_ids_exact_and_reconstruction_jsd_below_1e_6(scored):
    _, decoded, ref, _, _ = scored
    ids = flat(decoded, "teacher_topk_ids").reshape(-1, 8)
    lp = flat(decoded, "teacher_topk_logprobs").reshape(-1, 8).astype(np.float64)
    # same ids, each with its probability, sorted by log-prob as the scorer's top-k is
    assert (np.diff(lp, axis=1) <= 0).all()
    by_id = np.argsort(ids, 1)
    ref_by_id = np.argsort(ref["topk_ids"], 1)
    np.testing.assert_array_equal(np.take_along_axis(ids, by_id, 1),
                                  np.take_along_axis(ref["topk_ids"], ref_by_id, 1))
    q = np.exp(np.take_along_axis(lp, by_id, 1))
    p = np.take_along_axis(ref["topk_p"], ref_by_id, 1)
    recon = topk_tail_jsd(p, ref["tail"], q, np.clip(1 - q.sum(1), 0, None))  # the trainer's tail: 1 - sum
    assert recon.max() <= 1e-6
    # fx16/1 on the same tokens: its derived tail costs more than the bound on peaked tokens
    old = codec.decode_logprobs(codec.encode_logprobs(np.log(p))).astype(np.float64)
    q_old = np.exp(old)
    old_recon = topk_tail_jsd(p, ref["tail"], q_old, np.clip(1 - q_old.sum(1), 1e-12, None))
    assert recon.mean() < old_recon.mean() and old_recon.max() > 1e-6


def test_a_table_of_both_encodings_decodes_row_by_row(scored):
    back, decoded, _, _, emitted = scored
    rows = back.to_pylist()
    old = []  # the same decoded values as fx16/1 rows
    for r, d in zip(rows, decoded.to_pylist()):
        old.append({**r, "stats_id": r["stats_id"] + "-old", "encoding": codec.FX16, **codec.encode_columns(
            codec.FX16, student_logprobs=d["student_logprobs"], teacher_logprobs=d["teacher_logprobs"],
            jsd=d["jsd"], kl_forward=d["kl_forward"], kl_reverse=d["kl_reverse"],
            topk_ids=np.reshape(d["teacher_topk_ids"], (-1, 8)),
            topk_logprobs=np.reshape(d["teacher_topk_logprobs"], (-1, 8)))})
    mixed = TOKEN_STATS.rows([x for pair in zip(old, rows) for x in pair])  # interleaved
    tokens = [x for pair in zip([[0] * len(e) for e in emitted], emitted) for x in pair]  # fx16/1 ignores them
    got = codec.decode_table(mixed, tokens).to_pylist()
    for i, want in enumerate(decoded.to_pylist()):
        assert got[2 * i + 1] == want
        assert got[2 * i]["teacher_topk_ids"] == want["teacher_topk_ids"]
        np.testing.assert_allclose(got[2 * i]["jsd"], want["jsd"], atol=1e-7)
        np.testing.assert_allclose(got[2 * i]["teacher_topk_logprobs"], want["teacher_topk_logprobs"], atol=0.5 / 1024)


def test_unknown_encoding_and_missing_token_ids_are_refused(scored):
    from schemas.errors import MastersError

    back = scored[0]
    bad = back.set_column(back.schema.get_field_index("encoding"), "encoding", pa.array(["zz/9"] * back.num_rows))
    with pytest.raises(MastersError, match="'zz/9' is not one this version reads"):
        codec.decode_table(bad, None)
    with pytest.raises(ValueError, match="needs the responses' token ids"):
        codec.decode_table(back, None)


def test_the_carrier_holds_23_bit_integers_exactly():
    from schemas import token_codec_fx2 as fx2

    v = np.array([0, 1, 255, 65535, (1 << 23) - 1])
    assert (fx2.uncarry(fx2.carry(v)) == v).all() and np.isfinite(fx2.carry(v)).all()
    assert (fx2.carry(v) - np.float32(1 << 23) == v).all()  # what SQL decodes: x - 2^23
    with pytest.raises(ValueError, match="outside the carrier's range"):
        fx2.carry(np.array([1 << 23]))
    with pytest.raises(ValueError, match="outside the carrier's range"):
        fx2.carry(np.array([-1]))


def test_an_infinite_divergence_is_refused_not_stored():
    n = 3
    args = dict(student_logprobs=[-1.0] * n, teacher_logprobs=[-1.0] * n, jsd=[0.1] * n, kl_forward=[0.2] * n,
                kl_reverse=[0.1, np.inf, 0.1], topk_ids=[[1, 2]] * n, topk_logprobs=[[-0.5, -1.5]] * n, token_ids=[1] * n)
    with pytest.raises(ValueError, match="kl_reverse_sum is not finite"):
        codec.encode_columns(codec.FX2, **args)
    row = codec.encode_columns(codec.FX2, **{**args, "kl_reverse": [0.1, 1e4, 0.1]})  # huge is a number: kept
    assert row["kl_reverse_sum"] == pytest.approx(1e4 + 0.2, rel=1e-6)


def test_the_summaries_benchmark_runs_quick():
    """benchmarks/summaries.py --quick: every setting and k printed, fx/2 the smallest and the
    only one whose D error is below 1e-5."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "benchmarks/summaries.py", "--quick"], cwd=root, capture_output=True,
                         text=True, timeout=600, check=True).stdout
    rows = {(m["name"], int(m["k"])): (float(m["size"]), float(m["derr"])) for m in re.finditer(
        r"^(?P<name>float32|fx16/1|fx/2), k=(?P<k>\d+)\s+(?P<size>[\d.]+)\s+(?P<derr>[\d.e+-]+)", out, re.MULTILINE)}
    assert set(rows) == {(n, k) for n in ("float32", "fx16/1", "fx/2") for k in (4, 6, 8)}
    for k in (4, 6, 8):
        assert rows[("fx/2", k)][0] < rows[("fx16/1", k)][0] < rows[("float32", k)][0]
        assert rows[("fx/2", k)][1] <= 1e-5 < rows[("fx16/1", k)][1]
