"""Real-size shapes on CPU: a Qwen2-VL-style teacher with the real 151,936-row LM head and a
student whose head is padded to another width (152,064 rows), sharing one 151,665-id tokenizer
(Qwen2's count). Tokenizers are compared over their ids; scoring compares the distributions over
the shared ids, equal to a float64 reference; a whole iteration (bf16 teacher placed by
device_map, masked) generates, scores, rewards and takes a GRPO step."""

import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from gendata.hf_generate import generate, load_vlm, teacher_forced_logits
from gendata.masking import masked, plan_masks
from gendata.placement import Placement
from gendata.scoring import ScoringConfig, score_group
from gendata.synthetic_vqa import synthetic_vqa
from gendata.tiny_vlm import FAMILIES, TinySize, build_tiny_vlm, pad_tokenizer, train_tokenizer
from gendata.vocab import check_shared_tokenizer, head_width
from schemas import token_codec as codec
from schemas.errors import MastersError

TOKENS, TEACHER_HEAD, STUDENT_HEAD = 151_665, 151_936, 152_064


def _tokenizer(texts):
    fam = FAMILIES["qwen2_vl"]
    return pad_tokenizer(train_tokenizer(texts, fam.special_tokens, 400, fam.image_placeholder), TOKENS)


@pytest.fixture(scope="module")
def real_vocab_pair(tmp_path_factory):
    """(teacher, student) folders: hidden 128 and 64, heads of 151,936 and 152,064 rows."""
    root = tmp_path_factory.mktemp("real-vocab")
    qs = synthetic_vqa(60, "train")
    tok = _tokenizer([q["question"] + " " + q["answer"] for q in qs.questions.to_pylist()])
    teacher = build_tiny_vlm("qwen2_vl", TinySize(128, 2, 4, 2, 32, 1, 2), tok, root / "teacher", seed=1,
                             vocab_size=TEACHER_HEAD)
    student = build_tiny_vlm("qwen2_vl", TinySize(64, 2, 4, 2, 32, 1, 2), tok, root / "student", seed=0,
                             vocab_size=STUDENT_HEAD)
    return teacher, student


def test_tokenizers_are_compared_over_their_ids(real_vocab_pair, tmp_path):
    teacher, student = real_vocab_pair
    assert check_shared_tokenizer(teacher, student) == TOKENS
    from transformers import AutoTokenizer

    extended = tmp_path / "extended"  # one more added token: get_vocab() differs, the shared ids do not
    tok = AutoTokenizer.from_pretrained(student)
    tok.add_tokens(["<|extra|>"], special_tokens=True)
    tok.save_pretrained(extended)
    assert AutoTokenizer.from_pretrained(extended).get_vocab() != AutoTokenizer.from_pretrained(teacher).get_vocab()
    assert check_shared_tokenizer(teacher, extended) == TOKENS
    other = tmp_path / "other"  # trained on other text: other merges, other tokens at the same ids
    _tokenizer(["zebra quartz jumps over vexing fjords"] * 5).save_pretrained(other)
    with pytest.raises(MastersError, match="different tokenizers: token id \\d+ is .* must share a tokenizer.*"
                                           "not supported yet"):
        check_shared_tokenizer(teacher, other)


def reference(t_logits, s_logits, ids, k):
    """JSD / KL / top-k in float64 from the definitions, over the shared ids only."""
    p = torch.softmax(t_logits[:, :TOKENS].double(), -1)
    q = torch.softmax(s_logits[:, :TOKENS].double(), -1)
    m = (p + q) / 2
    kl = lambda a, b: (a * (a / b).log()).sum(-1)  # noqa: E731
    return {"jsd": (kl(p, m) + kl(q, m)) / 2, "kl_forward": kl(p, q), "kl_reverse": kl(q, p),
            "teacher_logprobs": p.log().gather(-1, ids[:, None])[:, 0],
            "student_logprobs": q.log().gather(-1, ids[:, None])[:, 0], "topk": p.log().topk(k, -1)}


def test_scoring_over_the_shared_ids_equals_a_float64_reference(real_vocab_pair):
    teacher_dir, student_dir = real_vocab_pair
    teacher, processor = load_vlm(teacher_dir)
    student, _ = load_vlm(student_dir)
    assert (head_width(teacher), head_width(student)) == (TEACHER_HEAD, STUDENT_HEAD)
    qs = synthetic_vqa(2, "test")
    image, prompt = qs.images.column("bytes")[0].as_py(), qs.questions.column("question")[0].as_py()
    samples = generate(student, processor, [prompt], [image], n=3, max_new_tokens=6, seed=3)[0]
    comps = [s.token_ids for s in samples]
    assert all(0 <= t < TOKENS for c in comps for t in c)  # padding rows are never sampled
    for s in samples:  # the behaviour log-probs are over the shared ids too
        ref = teacher_forced_logits(student, processor, prompt, image, s.token_ids)[:, :TOKENS].double().log_softmax(-1)
        np.testing.assert_allclose(s.logprobs, ref.gather(-1, torch.tensor(s.token_ids)[:, None])[:, 0], atol=1e-4)
    plan = plan_masks(teacher, [0.1])
    sums = score_group(teacher, student, processor, prompt, image, comps, 0.1, plan, ScoringConfig(top_k=8, chunk=4))
    for comp, got in zip(comps, sums):
        with masked(teacher, 0.1, plan):
            t_logits = teacher_forced_logits(teacher, processor, prompt, image, comp)
        s_logits = teacher_forced_logits(student, processor, prompt, image, comp)
        ref = reference(t_logits, s_logits, torch.tensor(comp), 8)
        for name in ("jsd", "kl_forward", "kl_reverse", "teacher_logprobs", "student_logprobs"):
            np.testing.assert_allclose(getattr(got, name), ref[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
        assert (got.topk_ids == ref["topk"].indices.numpy()).all()
        np.testing.assert_allclose(got.topk_logprobs, ref["topk"].values.numpy(), atol=1e-5)


def test_a_response_outside_the_shared_ids_is_refused(real_vocab_pair):
    from gendata.scoring import score_responses

    teacher_dir, student_dir = real_vocab_pair
    teacher, processor = load_vlm(teacher_dir)
    student, _ = load_vlm(student_dir)
    rows = pa.Table.from_pylist([{"response_id": "r-pad", "iteration_id": "i", "question_id": "q", "prompt": "p",
                                  "token_ids": [5, TOKENS + 3]}])
    with pytest.raises(MastersError, match=f"response r-pad holds token id {TOKENS + 3}, outside the {TOKENS} ids"):
        list(score_responses(teacher, student, processor, rows, {"q": b""}, teacher_model_id="t",
                             teacher_mask_ratio=0.0, student_model_id="s"))


def test_bf16_placement_on_cpu(real_vocab_pair):
    """dtype and device_map reach from_pretrained; the summary math stays float32."""
    teacher_dir, student_dir = real_vocab_pair
    t16, processor = load_vlm(teacher_dir, placement=Placement(dtype="bfloat16", device_map="auto"))
    assert next(t16.parameters()).dtype == torch.bfloat16 and t16.device.type == "cpu"  # placed by accelerate
    student, _ = load_vlm(student_dir)
    t32, _ = load_vlm(teacher_dir)
    qs = synthetic_vqa(2, "test")
    image, prompt = qs.images.column("bytes")[0].as_py(), qs.questions.column("question")[0].as_py()
    comps = [s.token_ids for s in generate(student, processor, [prompt], [image], n=2, max_new_tokens=5, seed=1)[0]]
    got16 = score_group(t16, student, processor, prompt, image, comps, 0.0, None, ScoringConfig(compile=False))
    got32 = score_group(t32, student, processor, prompt, image, comps, 0.0, None, ScoringConfig(compile=False))
    for a, b in zip(got16, got32):
        assert a.jsd.dtype == np.float32
        np.testing.assert_allclose(a.jsd, b.jsd, rtol=0.05, atol=1e-3)  # bf16 weights, fp32 math
        assert not np.array_equal(a.teacher_logprobs, b.teacher_logprobs)  # it really ran in bf16


def test_a_real_size_iteration_generates_scores_rewards_and_trains(real_vocab_pair, catalog_dir):
    from catalog import Catalog
    from masters.loop import run
    from masters.run_config import RunConfig

    teacher, student = real_vocab_pair
    cfg = RunConfig.parse({
        "run_id": "real", "iterations": 1, "questions": {"train": 4, "test": 4},
        "student": {"model": str(student)},
        "teachers": [{"model": str(teacher), "dtype": "bfloat16", "device_map": "auto"}],
        "mask": {"kind": "constant", "r_max": 0.1, "iterations": 1},
        "teacher_responses": 2, "student_responses": 2, "sampling": {"max_new_tokens": 6},
        "train": {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-4}, "eval": {"max_new_tokens": 4}})
    with Catalog.open(catalog_dir) as cat:
        result = run(cfg, cat, progress=False)
        counts = cat.sql("SELECT (SELECT count(*) FROM responses) AS r, (SELECT count(*) FROM token_stats) AS s, "
                         "(SELECT count(*) FROM rewards WHERE isfinite(reward)) AS w, "
                         "(SELECT max(list_max(token_ids)) FROM responses) AS tok").to_pylist()[0]
        stats = cat.sql("SELECT ts.*, r.token_ids AS emitted FROM token_stats ts JOIN responses r USING (response_id)")
    assert counts["r"] == counts["s"] == counts["w"] == 16
    top = codec.decode_table(stats, stats.column("emitted")).column("teacher_topk_ids")
    assert max(max(ids) for ids in top.to_pylist()) < TOKENS and counts["tok"] < TOKENS
    trained = result.iterations[0].student_out
    model, _ = load_vlm(trained)
    assert head_width(model) == STUDENT_HEAD  # the trained student keeps its padded head
    before, _ = load_vlm(student)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters()))  # one step moved it
    shutil.rmtree(trained, ignore_errors=True)
    assert math.isfinite(result.iterations[0].accuracy)
