"""Tiny vision-language models of real transformers architectures, built from configs, sharing
one tokenizer trained locally with `tokenizers` (so logit-level distillation between them is
meaningful). Nothing is downloaded.

Families (registry ``FAMILIES``; a new one is one class and one registration line):

- ``qwen2_vl``: Qwen2-VL. Its stock processor needs torchvision (for videos); without it the
  image-only processor in ``gendata/processor_shims.py`` is used and travels with the checkpoint
  (``auto_map``: load with ``trust_remote_code=True``).
- ``llava``: LLaVA (CLIP vision tower + Llama), whose stock processor builds as shipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BASE_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD, EOS = "<|endoftext|>", "<|im_end|>"
CHAT_WORDS = ["user", "assistant", "system", "The answer is", "\n"]


def chat_template(image_placeholder: str) -> str:
    """A ChatML template whose image items render as ``image_placeholder``."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for c in message['content'] %}{% if c['type'] == 'image' %}" + image_placeholder +
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass(frozen=True)
class TinySize:
    """Dimensions of one tiny model (language model + vision tower)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int

    @property
    def intermediate(self) -> int:
        return 2 * self.hidden


class VLMFamily(Protocol):
    """What a family provides to build tiny models of it."""

    name: str
    special_tokens: list[str]
    image_placeholder: str  # what one image renders as in the chat template

    def build_processor(self, tokenizer: PreTrainedTokenizerFast, image_size: int): ...

    def build_model(self, size: TinySize, tokenizer: PreTrainedTokenizerFast, image_size: int,
                    vocab_size: int | None = None): ...

    def generation_suppressed_tokens(self, tokenizer: PreTrainedTokenizerFast) -> list[int]: ...


def _ids(tokenizer, tokens: Iterable[str]) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


class Qwen2VLFamily:
    name = "qwen2_vl"
    special_tokens = BASE_SPECIAL + ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    image_placeholder = "<|vision_start|><|image_pad|><|vision_end|>"

    def build_processor(self, tokenizer, image_size):
        from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

        from gendata.processor_shims import ImageOnlyQwen2VLProcessor

        pixels = image_size * image_size
        image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=14,
                                                   merge_size=2, temporal_patch_size=2)
        return ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                         chat_template=chat_template(self.image_placeholder))

    def build_model(self, size, tokenizer, image_size, vocab_size=None):
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        half = size.hidden // size.heads // 2
        hw = (half - half // 4) // 2
        mrope = [half - 2 * hw, hw, hw]
        special = dict(zip(self.special_tokens, _ids(tokenizer, self.special_tokens)))
        common = dict(bos_token_id=special[PAD], eos_token_id=special[EOS], pad_token_id=special[PAD],
                      tie_word_embeddings=True)
        config = Qwen2VLConfig(
            text_config=dict(vocab_size=vocab_size or len(tokenizer), hidden_size=size.hidden,
                             intermediate_size=size.intermediate, num_hidden_layers=size.layers,
                             num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
                             max_position_embeddings=1024,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": mrope},
                             **common),
            vision_config=dict(depth=size.vision_layers, embed_dim=size.vision_hidden,
                               hidden_size=size.hidden, num_heads=size.vision_heads, mlp_ratio=2,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                               in_channels=3),
            image_token_id=special["<|image_pad|>"], video_token_id=special["<|video_pad|>"],
            vision_start_token_id=special["<|vision_start|>"],
            vision_end_token_id=special["<|vision_end|>"], **common)
        return Qwen2VLForConditionalGeneration(config)

    def generation_suppressed_tokens(self, tokenizer):
        return _ids(tokenizer, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                "<|video_pad|>", "<|im_start|>", PAD])


class LlavaFamily:
    name = "llava"
    special_tokens = BASE_SPECIAL + ["<image>"]
    image_placeholder = "<image>"

    def build_processor(self, tokenizer, image_size):
        from transformers import LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                                crop_size={"height": image_size, "width": image_size})
        return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                              vision_feature_select_strategy="default", image_token="<image>",
                              num_additional_image_tokens=1,
                              chat_template=chat_template(self.image_placeholder))

    def build_model(self, size, tokenizer, image_size, vocab_size=None):
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

        special = dict(zip(self.special_tokens, _ids(tokenizer, self.special_tokens)))
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=size.vision_hidden,
                                           intermediate_size=2 * size.vision_hidden,
                                           num_hidden_layers=size.vision_layers,
                                           num_attention_heads=size.vision_heads,
                                           image_size=image_size, patch_size=14),
            text_config=LlamaConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=size.hidden,
                                    intermediate_size=size.intermediate,
                                    num_hidden_layers=size.layers, num_attention_heads=size.heads,
                                    num_key_value_heads=size.kv_heads, max_position_embeddings=1024,
                                    bos_token_id=special[PAD], eos_token_id=special[EOS],
                                    pad_token_id=special[PAD], tie_word_embeddings=True),
            image_token_id=special["<image>"], vision_feature_select_strategy="default",
            vision_feature_layer=-1, projector_hidden_act="gelu", tie_word_embeddings=True)
        return LlavaForConditionalGeneration(config)

    def generation_suppressed_tokens(self, tokenizer):
        return _ids(tokenizer, ["<image>", "<|im_start|>", PAD])


FAMILIES: dict[str, VLMFamily] = {f.name: f for f in (Qwen2VLFamily(), LlavaFamily())}


def family(name: str) -> VLMFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown VLM family {name!r}; known: {', '.join(FAMILIES)}") from None


def train_tokenizer(texts: Iterable[str], special_tokens: list[str], vocab_size: int = 512,
                    image_placeholder: str = "<image>") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (any text still encodes: bytes are in the
    alphabet), with the special tokens and the ChatML template the processors need."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts) + CHAT_WORDS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   chat_template=chat_template(image_placeholder))


def pad_tokenizer(tokenizer: PreTrainedTokenizerFast, n_ids: int) -> PreTrainedTokenizerFast:
    """``tokenizer`` with ``n_ids`` ids: its own, then filler tokens that no text encodes to (a
    real-size vocabulary, e.g. Qwen2's 151,665 ids, for tests and benchmarks of real shapes)."""
    import json

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    have = len(tokenizer)
    if n_ids < have:
        raise ValueError(f"the tokenizer already has {have} ids, more than {n_ids}")
    if max(list(vocab.values()) + [t["id"] for t in data["added_tokens"]]) != have - 1:
        raise ValueError("the tokenizer's ids are not contiguous")
    vocab.update({f"<|filler_{i}|>": i for i in range(have, n_ids)})
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token=EOS,
                                   pad_token=PAD, chat_template=tokenizer.chat_template)


def build_tiny_vlm(family_name: str, size: TinySize, tokenizer: PreTrainedTokenizerFast,
                   out_dir: str | Path, image_size: int = 112, seed: int = 0,
                   vocab_size: int | None = None) -> Path:
    """Build a randomly initialised tiny VLM with ``tokenizer`` and save model + processor as an
    ordinary Hugging Face folder. ``vocab_size``: LM-head rows, when padded past the tokenizer's
    ids (as real checkpoints are)."""
    fam = family(family_name)
    torch.manual_seed(seed)
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} ids")
    model = fam.build_model(size, tokenizer, image_size, vocab_size)
    processor = fam.build_processor(tokenizer, image_size)
    model.generation_config.suppress_tokens = fam.generation_suppressed_tokens(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "masters_tiny.json").write_text(
        __import__("json").dumps({"family": family_name, "size": asdict(size), "image_size": image_size,
                                  "seed": seed, **({"vocab_size": vocab_size} if vocab_size else {})}, indent=2))
    return out


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
