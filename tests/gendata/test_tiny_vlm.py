"""Tiny checkpoints of two architecture families through one code path: save/reload with the
Auto classes, several sampled responses per image, teacher-forced log-probs equal to
generation's."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from gendata.hf_generate import generate, load_vlm, teacher_forced_logprobs
from gendata.synthetic_vqa import synthetic_vqa

FAMILIES = ["qwen2_vl", "llava"]


@pytest.fixture(scope="module")
def questions():
    qs = synthetic_vqa(4, "test")
    images = {r["image_id"]: r["bytes"] for r in qs.images.to_pylist()}
    rows = qs.questions.to_pylist()
    return [r["question"] for r in rows], [images[r["image_id"]] for r in rows]


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_through_auto_classes(tiny_checkpoints, family):
    path = tiny_checkpoints[family]
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(path)
    expected = {"qwen2_vl": ("ImageOnlyQwen2VLProcessor", "Qwen2VLForConditionalGeneration"),
                "llava": ("LlavaProcessor", "LlavaForConditionalGeneration")}[family]
    assert (type(processor).__name__, type(model).__name__) == expected
    meta = json.loads((path / "masters_tiny.json").read_text())
    assert meta["family"] == family
    # the tokenizer is the one trained locally, with the chat template and image tokens
    assert len(processor.tokenizer) < 1000
    assert processor.tokenizer.convert_tokens_to_ids(processor.image_token) is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_several_samples_per_image_deterministic_by_seed(tiny_checkpoints, questions, family):
    model, processor = load_vlm(tiny_checkpoints[family])
    prompts, images = questions
    a = generate(model, processor, prompts, images, n=3, max_new_tokens=6, seed=11)
    b = generate(model, processor, prompts, images, n=3, max_new_tokens=6, seed=11)
    c = generate(model, processor, prompts, images, n=3, max_new_tokens=6, seed=12)
    assert len(a) == len(prompts) and all(len(g) == 3 for g in a)
    assert [[s.token_ids for s in g] for g in a] == [[s.token_ids for s in g] for g in b]
    assert [[s.token_ids for s in g] for g in a] != [[s.token_ids for s in g] for g in c]
    assert len({tuple(s.token_ids) for g in a for s in g}) > len(prompts)  # samples differ
    suppressed = set(model.generation_config.suppress_tokens)
    assert not suppressed & {t for g in a for s in g for t in s.token_ids}  # no image tokens sampled


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_forced_logprobs_equal_generation(tiny_checkpoints, questions, family):
    model, processor = load_vlm(tiny_checkpoints[family])
    prompts, images = questions
    groups = generate(model, processor, prompts[:2], images[:2], n=2, max_new_tokens=6, seed=3)
    for prompt, image, group in zip(prompts, images, groups):
        for sample in group:
            forced = teacher_forced_logprobs(model, processor, prompt, image, sample.token_ids)
            assert len(forced) == len(sample.logprobs) == len(sample.token_ids)
            assert torch.allclose(torch.tensor(forced), torch.tensor(sample.logprobs), atol=1e-4)
