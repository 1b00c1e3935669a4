"""Content-hash ids. Every row's id is a hash of what defines it, so re-running a stage yields the
same ids and the catalog skips rows it already holds.

An id is the first 32 hex digits (128 bits) of the SHA-256 of a canonical JSON document
``{"kind": KIND, ...fields}`` (sorted keys, no spaces, floats rounded to 12 decimals so that
0.1 + 0.05 and 0.15 give the same id).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

ID_HEX_DIGITS = 32


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot hash a non-finite float ({value!r}) into an id")
        rounded = round(value, 12)
        return int(rounded) if rounded == int(rounded) else rounded
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic models
        return _canonical(value.model_dump(mode="json"))
    raise TypeError(f"cannot hash a value of type {type(value).__name__} into an id")


def canonical_json(value: Any) -> str:
    """The canonical JSON text that ids and config hashes are computed from."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_id(kind: str, **fields: Any) -> str:
    """The id of a row of ``kind`` defined by ``fields``."""
    doc = canonical_json({"kind": kind, **fields})
    return hashlib.sha256(doc.encode()).hexdigest()[:ID_HEX_DIGITS]


def bytes_id(data: bytes) -> str:
    """The id of a blob (e.g. an image): its own SHA-256, so it is stored once."""
    return hashlib.sha256(data).hexdigest()[:ID_HEX_DIGITS]


def config_hash(config: Any) -> str:
    """The hash of a configuration (a dict or a pydantic model), for commit metadata."""
    return content_id("config", config=config)


# --- one function per table: what defines a row -------------------------------------------------


def question_id(source: str, image_id: str | None, question: str, answer: str,
                choices: Sequence[str] | None = None, answers: Sequence[str] | None = None) -> str:
    """``answers``: every accepted answer, ``answer`` first. A question with one accepted answer
    keeps the id it has without ``answers``; more answers are part of what defines it."""
    fields = {"answers": list(answers)} if answers and list(answers) != [answer] else {}
    return content_id("question", source=source, image_id=image_id, question=question,
                      answer=answer, choices=list(choices or []), **fields)


def iteration_id(run_id: str, iteration: int) -> str:
    return content_id("iteration", run_id=run_id, iteration=iteration)


def group_id(iteration_id: str, question_id: str) -> str:
    """A GRPO group: all responses to one question in one iteration."""
    return content_id("group", iteration_id=iteration_id, question_id=question_id)


def response_id(iteration_id: str, question_id: str, source: str, model_id: str,
                mask_ratio: float, sample_index: int, seed: int,
                sampling: Mapping[str, Any]) -> str:
    """A response is defined by what produced it, not by its text: a re-run of the same generation
    (even on hardware that samples differently) is the same response and is not stored twice."""
    return content_id("response", iteration_id=iteration_id, question_id=question_id,
                      source=source, model_id=model_id, mask_ratio=mask_ratio,
                      sample_index=sample_index, seed=seed, sampling=dict(sampling))


def token_stats_id(response_id: str, teacher_model_id: str, teacher_mask_ratio: float,
                   student_model_id: str, top_k: int, encoding: str) -> str:
    return content_id("token_stats", response_id=response_id, teacher_model_id=teacher_model_id,
                      teacher_mask_ratio=teacher_mask_ratio, student_model_id=student_model_id,
                      top_k=top_k, encoding=encoding)


def judge_id(kind: str, model: str | None, template_version: str | None,
             params: Mapping[str, Any] | None = None) -> str:
    return content_id("judge", judge_kind=kind, model=model, template_version=template_version,
                      params=dict(params or {}))


def verdict_id(response_id: str, judge_id: str, attempt: int = 0) -> str:
    """Attempt n > 0 is a retry after n failed (``error``) verdicts of the same judge."""
    if attempt:
        return content_id("verdict", response_id=response_id, judge_id=judge_id, attempt=attempt)
    return content_id("verdict", response_id=response_id, judge_id=judge_id)


def reward_id(response_id: str, reward_config_id: str) -> str:
    return content_id("reward", response_id=response_id, reward_config_id=reward_config_id)


NOT_WEIGHTS = {"training_args.bin", "optimizer.bin", "scheduler.bin", "scaler.bin"}


def checkpoint_id(folder) -> str:
    """The id of a checkpoint: a hash of its weight files' bytes (safetensors, else torch .bin
    weights), so two folders holding the same weights are the same model and any change of weights
    is a new one. Side files (training_args.bin, which holds paths and times) do not count."""
    from pathlib import Path

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors" and p.is_file())
    if not files:  # older checkpoints: torch pickles, but not the trainer's side files
        files = sorted(p for p in folder.iterdir() if p.suffix == ".bin" and p.is_file()
                       and p.name not in NOT_WEIGHTS)
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin) in {folder}")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:ID_HEX_DIGITS]
