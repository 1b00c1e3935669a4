"""Generation backends: the transformers backend on CPU, the vLLM backend on a GPU."""

import pytest
import torch

from gendata.backends import BACKENDS, SamplingConfig, TransformersBackend, backend, generate_responses
from gendata.synthetic_vqa import synthetic_vqa
from schemas.tables import RESPONSES


@pytest.fixture(scope="module")
def questions():
    qs = synthetic_vqa(4, "test")
    by_id = dict(zip(qs.images.column("image_id").to_pylist(), qs.images.column("bytes").to_pylist()))
    return qs.questions, {q["question_id"]: by_id[q["image_id"]] for q in qs.questions.to_pylist()}


def test_rows_record_everything_and_rerun_generates_only_what_is_missing(tiny_checkpoints, questions):
    qtable, images = questions
    eng = backend("transformers", str(tiny_checkpoints["qwen2_vl"]), mask_ratio=0.2)
    kw = dict(iteration_id="it0", source="teacher", model_id="m", mask_ratio=0.2, n=3, seed=7,
              sampling=SamplingConfig(max_new_tokens=5))
    full = list(generate_responses(eng, qtable, images, questions_per_batch=3, **kw))
    assert [t.num_rows for t in full] == [9, 3]
    rows = [r for t in full for r in t.to_pylist()]
    assert full[0].schema.equals(RESPONSES.schema)
    r = rows[0]
    assert (r["source"], r["model_id"], r["mask_ratio"], r["seed"]) == ("teacher", "m", 0.2, 7)
    assert r["sampling"] == {"temperature": 1.0, "top_p": 0.9, "top_k": 50,
                             "repetition_penalty": 1.05, "max_new_tokens": 5}
    assert sorted(x["sample_index"] for x in rows[:3]) == [0, 1, 2]
    assert all(x["finish_reason"] in ("stop", "length") and x["num_tokens"] == len(x["token_ids"]) for x in rows)
    # pretend the first two questions were committed before a crash: only the rest is generated
    done = {x["response_id"] for x in rows[:6]}
    rest = [x for t in generate_responses(eng, qtable, images, existing=done, **kw) for x in t.to_pylist()]
    assert [x["response_id"] for x in rest] == [x["response_id"] for x in rows[6:]]
    assert [x["token_ids"] for x in rest] == [x["token_ids"] for x in rows[6:]]  # same samples


def test_masked_teacher_generation_leaves_weights_intact(tiny_checkpoints, questions):
    qtable, images = questions
    eng = TransformersBackend(str(tiny_checkpoints["llava"]), mask_ratio=0.5)
    before = {k: v.clone() for k, v in eng.model.state_dict().items()}
    plain = TransformersBackend(str(tiny_checkpoints["llava"]))
    q = qtable.to_pylist()[0]
    a = eng.sample([q["question"]], [images[q["question_id"]]], 2, SamplingConfig(max_new_tokens=6), [1])
    b = plain.sample([q["question"]], [images[q["question_id"]]], 2, SamplingConfig(max_new_tokens=6), [1])
    assert [s.token_ids for s in a[0]] != [s.token_ids for s in b[0]]  # the mask changes the model
    assert all(torch.equal(eng.model.state_dict()[k], v) for k, v in before.items())


def test_registry_names_backends():
    from gendata.backends import VLLMOptions
    from schemas.errors import UnknownKindError

    assert list(BACKENDS) == ["transformers", "vllm"]
    assert BACKENDS["vllm"].params is VLLMOptions  # the run config's `vllm:` section
    with pytest.raises(UnknownKindError, match="unknown generation backend 'onnx'; known: transformers, vllm"):
        backend("onnx", "x")


def test_the_vllm_backend_without_vllm_names_the_extra(monkeypatch):
    import sys

    from schemas.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without the gpu extra
    with pytest.raises(MissingExtraError, match=r"needs the Python package 'vllm'.*masters-distill\[gpu\]"):
        backend("vllm", "x", mask_ratio=0.2)


@pytest.mark.gpu
def test_vllm_backend_on_a_tiny_checkpoint(tiny_checkpoints, questions):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (vLLM)")
    pytest.importorskip("vllm", reason="vLLM is not installed (the gpu extra)")
    qtable, images = questions
    eng = backend("vllm", str(tiny_checkpoints["qwen2_vl"]), mask_ratio=0.2, gpu_memory_utilization=0.3,
                  enforce_eager=True)
    kw = dict(iteration_id="it", source="teacher", model_id="m", mask_ratio=0.2, n=4, seed=3)
    rows = [r for t in generate_responses(eng, qtable, images, **kw) for r in t.to_pylist()]
    again = [r for t in generate_responses(eng, qtable, images, **kw) for r in t.to_pylist()]
    assert len(rows) == 4 * qtable.num_rows
    assert all(r["num_tokens"] > 0 for r in rows)
    assert [r["token_ids"] for r in rows] == [r["token_ids"] for r in again]  # seeded per question
    assert len({tuple(r["token_ids"]) for r in rows[:4]}) > 1  # n distinct samples
    suppressed = set(eng.logit_bias)
    assert suppressed and not suppressed & {t for r in rows for t in r["token_ids"]}
    eng.close()
