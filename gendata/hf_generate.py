"""Generation and teacher forcing with transformers VLMs (CPU or GPU): batched sampling of n
responses per prompt with per-token log-probs, and teacher-forced log-probs of given responses
that equal generation's. The generation backends (gendata/backends.py) build on these."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from schemas.errors import MastersError
from schemas.prompts import user_message


@dataclass
class Sample:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" or "length"
    logprobs: list[float] = field(default_factory=list)  # raw-distribution log-prob of each token


def load_vlm(path, trust_remote_code: bool = True, device: str | None = None, placement=None):
    """(model, processor) of a checkpoint folder, in eval mode. ``placement``
    (``gendata.placement.Placement``): its dtype and device_map; by default float32 on one device
    (``device``, or the first GPU, or the CPU)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gendata.placement import DEFAULT

    placement = placement or DEFAULT
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(path, **placement.from_pretrained_kwargs(device))
    if placement.device_map is None:
        model.to(device)
    return model.eval(), processor


def as_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image)).convert("RGB")
    if isinstance(image, dict) and image.get("bytes") is not None:
        return as_image(image["bytes"])
    raise MastersError(f"cannot read an image from a {type(image).__name__}")


def chat_text(processor, prompt: str, with_image: bool = True) -> str:
    return processor.apply_chat_template(user_message(prompt, with_image), add_generation_prompt=True,
                                         tokenize=False)


def _inputs(model, processor, prompts: Sequence[str], images: Sequence) -> dict:
    texts = [chat_text(processor, p) for p in prompts]
    batch = processor(images=[as_image(i) for i in images], text=texts, return_tensors="pt",
                      padding=True, padding_side="left")
    return {k: v.to(model.device) for k, v in batch.items()}


class OnlyTokenizerIds:
    """A logits processor that never lets generation pick an id past the tokenizer's last one
    (LM-head padding rows are not tokens)."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, input_ids, scores):
        scores[:, self.vocab:] = float("-inf")
        return scores


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


@torch.no_grad()
def generate(model, processor, prompts: Sequence[str], images: Sequence, *, n: int = 1,
             do_sample: bool = True, temperature: float = 1.0, top_p: float = 0.9, top_k: int = 50,
             repetition_penalty: float = 1.05, max_new_tokens: int = 32, seed: int = 0,
             batch_size: int = 16) -> list[list[Sample]]:
    """``n`` samples for each (prompt, image); deterministic for a given seed and batch size.
    Only the tokenizer's ids are sampled, and each sample's log-probs are over them."""
    from transformers import LogitsProcessorList

    eos, pad = _eos_ids(model), processor.tokenizer.pad_token_id
    vocab = len(processor.tokenizer)
    padded = model.get_output_embeddings().weight.shape[0] > vocab
    out: list[list[Sample]] = []
    for start in range(0, len(prompts), batch_size):
        inputs = _inputs(model, processor, prompts[start:start + batch_size], images[start:start + batch_size])
        torch.manual_seed(seed + start)
        kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, num_return_sequences=n,
                      repetition_penalty=repetition_penalty, output_logits=True,
                      return_dict_in_generate=True, pad_token_id=pad)
        if padded:
            kwargs["logits_processor"] = LogitsProcessorList([OnlyTokenizerIds(vocab)])
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        res = model.generate(**inputs, **kwargs)
        new = res.sequences[:, inputs["input_ids"].shape[1]:]
        # log-prob of each sampled token under the raw logits, one step at a time ((B*n, V) each)
        chosen = torch.stack([step[:, :vocab].float().log_softmax(-1).gather(-1, new[:, i:i + 1]).squeeze(-1)
                              for i, step in enumerate(res.logits)], dim=1)
        for row in range(0, new.shape[0], n):
            group = []
            for j in range(row, row + n):
                ids = new[j].tolist()
                stop = next((k for k, t in enumerate(ids) if t in eos), None)
                keep = ids if stop is None else ids[:stop + 1]
                group.append(Sample(token_ids=keep,
                                    text=processor.tokenizer.decode(keep, skip_special_tokens=True),
                                    finish_reason="length" if stop is None else "stop",
                                    logprobs=chosen[j, :len(keep)].tolist()))
            out.append(group)
    return out


@torch.no_grad()
def teacher_forced_logits(model, processor, prompt: str, image, completion_ids: Sequence[int]) -> torch.Tensor:
    """Logits (T, V) predicting each completion token, from one forward pass over prompt + image +
    completion. Qwen-VL's ``mm_token_type_ids`` is zero-padded over the completion."""
    inputs = _inputs(model, processor, [prompt], [image])
    comp = torch.tensor([list(completion_ids)], dtype=inputs["input_ids"].dtype, device=model.device)
    p_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(comp)], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(comp)], dim=1)
    logits = model(**inputs).logits[0]
    return logits[p_len - 1: p_len - 1 + comp.shape[1]].float()


def teacher_forced_logprobs(model, processor, prompt: str, image, completion_ids: Sequence[int]) -> list[float]:
    logits = teacher_forced_logits(model, processor, prompt, image, completion_ids)
    ids = torch.tensor(list(completion_ids), device=logits.device)
    return logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1).tolist()
