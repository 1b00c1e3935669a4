"""Loading and saving checkpoints: an ordinary Hugging Face folder plus meta.json (lineage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

META_NAME = "meta.json"


def load_model_and_processor(path: str | Path, trust_remote_code: bool = True):
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    return model, processor


CARRIED_FILES = ("masters_tiny.json",)  # descriptive files of the base checkpoint kept in the new one


def save_checkpoint(model, processor, out: Path, meta: dict[str, Any], base_model: str | Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for name in CARRIED_FILES if base_model else ():
        if (Path(base_model) / name).is_file():
            (out / name).write_text((Path(base_model) / name).read_text())
    (out / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return out
