"""Image-only processors for VLM families whose stock processor needs torchvision (for its video
processor) and so cannot be built on machines without it.

This file imports only transformers: it is copied into every checkpoint that uses one of its
classes (``auto_map``), so ``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``
works in any process, the trainer's included, without importing masters-distill.
"""

from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor: images and text only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


ImageOnlyQwen2VLProcessor.register_for_auto_class("AutoProcessor")
