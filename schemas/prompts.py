"""How a row's ``prompt`` is shown to a model: one user turn, the image first, then the text.
Generation and scoring (gendata) and the GRPO trainer render prompts through this one function,
so the trainer's prompt tokens are exactly those the stored log-probs were taken on."""

from __future__ import annotations


def user_message(prompt: str, with_image: bool = True) -> list[dict]:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}]
