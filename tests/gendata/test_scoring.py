"""Teacher-forced scoring agrees with an independent full-distribution computation, the compact
encoding stays within its error bounds, and the summaries round-trip through the catalog."""

import math

import numpy as np
import pytest
import torch

from gendata.hf_generate import generate, load_vlm, teacher_forced_logits
from gendata.masking import masked, plan_masks
from gendata.scoring import ScoringConfig, score_group, score_responses, token_stats_row
from gendata.synthetic_vqa import synthetic_vqa
from schemas import token_codec as codec

FAMILIES = ["qwen2_vl", "llava"]


def reference(t_logits, s_logits, ids):
    """JSD / KL in float64 straight from the definitions, no shared code."""
    p = torch.softmax(t_logits.double(), -1)
    q = torch.softmax(s_logits.double(), -1)
    m = (p + q) / 2
    kl = lambda a, b: (a * (a / b).log()).sum(-1)  # noqa: E731
    return {"jsd": (kl(p, m) + kl(q, m)) / 2, "kl_forward": kl(p, q), "kl_reverse": kl(q, p),
            "teacher_lp": p.log().gather(-1, ids[:, None])[:, 0], "student_lp": q.log().gather(-1, ids[:, None])[:, 0],
            "topk": p.log().topk(4, -1)}


@pytest.fixture(scope="module")
def setup(tiny_checkpoints):
    qs = synthetic_vqa(3, "test")
    image = qs.images.column("bytes")[0].as_py()
    prompt = qs.questions.column("question")[0].as_py()
    return qs, image, prompt


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk", [3, 256])
def test_scoring_matches_full_distributions(tiny_checkpoints, setup, family, chunk):
    _, image, prompt = setup
    student, processor = load_vlm(tiny_checkpoints[family])
    teacher, _ = load_vlm(tiny_checkpoints[family])
    with torch.no_grad():  # a different teacher: perturb a copy of the weights
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    samples = generate(student, processor, [prompt], [image], n=3, max_new_tokens=7, seed=5)[0]
    comps = [s.token_ids for s in samples]
    plan = plan_masks(teacher, [0.2])
    sums = score_group(teacher, student, processor, prompt, image, comps, 0.2, plan,
                       ScoringConfig(top_k=4, chunk=chunk))
    for comp, got in zip(comps, sums):
        ids = torch.tensor(comp)
        with masked(teacher, 0.2, plan):
            t_logits = teacher_forced_logits(teacher, processor, prompt, image, comp)
        s_logits = teacher_forced_logits(student, processor, prompt, image, comp)
        ref = reference(t_logits, s_logits, ids)
        for name in ("jsd", "kl_forward", "kl_reverse"):
            np.testing.assert_allclose(getattr(got, name), ref[name].numpy(), atol=2e-5)
        np.testing.assert_allclose(got.teacher_logprobs, ref["teacher_lp"].numpy(), atol=2e-5)
        np.testing.assert_allclose(got.student_logprobs, ref["student_lp"].numpy(), atol=2e-5)
        np.testing.assert_array_equal(got.topk_ids, ref["topk"].indices.numpy())
        assert (got.jsd > 0).all() and (got.jsd <= np.log(2) + 1e-6).all()


def test_codec_error_bounds():
    rng = np.random.default_rng(0)
    lp = -rng.exponential(2.0, 10000)
    jsd = rng.uniform(0, np.log(2), 10000)
    kl = rng.exponential(1.0, 10000)
    assert np.abs(codec.decode_logprobs(codec.encode_logprobs(lp)) - np.maximum(lp, -32)).max() <= 0.5 / 1024 + 1e-7
    assert np.abs(codec.decode_jsd(codec.encode_jsd(jsd)) - jsd).max() <= 0.5 / 32768 + 1e-7
    assert np.abs(codec.decode_kl(codec.encode_kl(kl)) - np.minimum(kl, 32)).max() <= 0.5 / 1024 + 1e-7
    assert codec.encode_logprobs([-100.0])[0] == -32 * 1024  # clipped, documented


def test_summaries_round_trip_through_the_catalog(tiny_checkpoints, setup, tmp_path):
    import pyarrow as pa

    from catalog import Catalog
    from schemas.tables import TOKEN_STATS

    _, image, prompt = setup
    student, processor = load_vlm(tiny_checkpoints["qwen2_vl"])
    comps = [s.token_ids for s in generate(student, processor, [prompt], [image], n=2, max_new_tokens=5)[0]]
    sums = score_group(student, student, processor, prompt, image, comps, 0.0, None, ScoringConfig(top_k=3))
    rows = [token_stats_row(f"r{j}", s, iteration_id="it", teacher_model_id="t", teacher_mask_ratio=0.0,
                            student_model_id="s", top_k=3, token_ids=comps[j]) for j, s in enumerate(sums)]
    table = pa.Table.from_pylist(rows, schema=TOKEN_STATS.schema)
    with Catalog.open(tmp_path / "cat") as cat:
        cat.append("token_stats", table, "scores")
        back = cat.read("token_stats").sort_by("response_id")
    assert back.equals(table.sort_by("response_id"))
    decoded = codec.decode_table(back, [comps[int(r[1:])] for r in back.column("response_id").to_pylist()])
    jsd = decoded.column("jsd")[0].values.to_numpy()
    np.testing.assert_allclose(jsd, sums[0].jsd, atol=0.5 / 32768 + 1e-7)
    assert back.column("jsd_sum")[0].as_py() == pytest.approx(float(sums[0].jsd.astype(np.float64).sum()), abs=1e-12)
    assert np.allclose(sums[0].jsd, 0, atol=1e-6)  # the same model on both sides: no divergence


def test_score_responses_batches_and_skips(tiny_checkpoints, tmp_path):
    from gendata.backends import TransformersBackend, generate_responses

    qs = synthetic_vqa(3, "test")
    images = {r["question_id"]: dict(zip(qs.images.column("image_id").to_pylist(),
                                         qs.images.column("bytes").to_pylist()))[r["image_id"]]
              for r in qs.questions.to_pylist()}
    backend = TransformersBackend(str(tiny_checkpoints["llava"]))
    responses = next(generate_responses(backend, qs.questions, images, iteration_id="it", source="student",
                                        model_id="m", mask_ratio=0.0, n=2, seed=1, questions_per_batch=10))
    student, processor = backend.model, backend.processor
    batches = list(score_responses(student, student, processor, responses, images, teacher_model_id="t",
                                   teacher_mask_ratio=0.0, student_model_id="s",
                                   config=ScoringConfig(top_k=2), groups_per_batch=2))
    assert [b.num_rows for b in batches] == [4, 2]
    done = set(batches[0].column("stats_id").to_pylist())
    again = list(score_responses(student, student, processor, responses, images, teacher_model_id="t",
                                 teacher_mask_ratio=0.0, student_model_id="s",
                                 config=ScoringConfig(top_k=2), skip=done))
    assert sum(b.num_rows for b in again) == 2


def test_non_finite_summaries_are_refused():
    from gendata.scoring import TokenSummary

    s = TokenSummary(*[np.zeros(3, np.float32) for _ in range(5)], np.zeros((3, 2), np.int64),
                     np.zeros((3, 2), np.float32))
    s.jsd[1] = np.nan
    with pytest.raises(ValueError, match="response r7: NaN jsd"):
        token_stats_row("r7", s, iteration_id="it", teacher_model_id="t", teacher_mask_ratio=0.0, student_model_id="s",
                        top_k=2, token_ids=[0, 0, 0])


def test_zero_probability_tokens_give_finite_divergences():
    from gendata.scoring import summarise

    t = torch.tensor([[0.0, 1.0, float("-inf")]])
    s = torch.tensor([[0.5, 0.5, 0.0]])
    out = summarise(t, s, torch.tensor([1]), 2)
    p = torch.softmax(t.double(), -1)[0].tolist()  # [0.269, 0.731, 0]
    q = torch.softmax(s.double(), -1)[0].tolist()
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    assert np.isfinite(out.jsd).all() and np.isfinite(out.kl_forward).all()
    assert out.jsd[0] == pytest.approx((kl(p, m) + kl(q, m)) / 2, abs=1e-6)
    assert out.kl_forward[0] == pytest.approx(kl(p, q), abs=1e-6)
    assert out.kl_reverse[0] > 1000  # q puts mass where p has none: (truly infinite) huge, not NaN...
    row = token_stats_row("r", out, iteration_id="it", teacher_model_id="t", teacher_mask_ratio=0.0, student_model_id="s",
                          top_k=2, token_ids=[1])
    from schemas.tables import TOKEN_STATS

    decoded = codec.decode_table(TOKEN_STATS.rows([row]), [[1]])
    assert decoded.column("kl_reverse")[0][0].as_py() == pytest.approx(32.0, abs=1e-3)  # ...clipped at ~32 nats
    assert row["kl_reverse_sum"] > 1000  # the exact sum is not clipped
