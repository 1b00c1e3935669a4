"""Question rows in the catalog's layout (`questions` + `images`), shared by every source."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from PIL import Image

from schemas import ids
from schemas.tables import IMAGES, QUESTIONS


@dataclass
class QuestionSet:
    """Questions and the images they reference (each image once), as Arrow tables."""

    questions: pa.Table
    images: pa.Table
    skipped: int = 0  # bad rows skipped on request (see the source's report)
    problems: list[str] = field(default_factory=list)


class QuestionSetBuilder:
    """Collects question rows, storing each distinct image once."""

    def __init__(self, source: str):
        self.source = source
        self._questions: list[dict[str, Any]] = []
        self._images: dict[str, dict[str, Any]] = {}

    def add(self, *, image: bytes | None, question: str, answer: str, split: str, qtype: str,
            answer_type: str, choices: list[str] | None = None, meta: dict | None = None,
            image_info: tuple[str, int, int] | None = None, answers: list[str] | None = None) -> str:
        """``answers``: every accepted answer when there are several, ``answer`` first (the SFT
        target); default just ``answer``."""
        answers = list(answers or [answer])
        if answers[0] != answer:
            raise ValueError(f"answers {answers!r} must start with the answer {answer!r}")
        image_id = None
        if image is not None:
            image_id = ids.bytes_id(image)
            if image_id not in self._images:
                fmt, w, h = image_info or _probe(image)
                self._images[image_id] = {"image_id": image_id, "bytes": image, "format": fmt,
                                          "width": w, "height": h}
        qid = ids.question_id(self.source, image_id, question, answer, choices, answers)
        self._questions.append({
            "question_id": qid, "source": self.source, "split": split, "qtype": qtype,
            "answer_type": answer_type, "question": question, "answer": answer,
            "choices": list(choices or []), "image_id": image_id,
            "meta": json.dumps(meta, sort_keys=True) if meta else None, "answers": answers})
        return qid

    def build(self, skipped: int = 0, problems: list[str] | None = None) -> QuestionSet:
        return QuestionSet(pa.Table.from_pylist(self._questions, schema=QUESTIONS.schema),
                           pa.Table.from_pylist(list(self._images.values()), schema=IMAGES.schema),
                           skipped, problems or [])


def _probe(data: bytes) -> tuple[str, int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.format or "unknown", img.width, img.height


def format_prompt(question: str, choices: list[str] | None) -> str:
    """The user prompt for a question: the text, then lettered options when there are any."""
    if not choices:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return question + "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
